"""Long-term memory: what an agent learns about each user, kept on LangGraph's ``BaseStore``.

- **write**: after a turn, the model extracts durable facts and preferences, each rated for
  importance (1-10);
- **consolidate**: a new fact close to a stored one (by embedding) is judged SAME (the stored
  one is refreshed), UPDATE (the stored one is superseded: kept, with ``valid_to`` set, and the
  new version points back to it) or NEW; nothing is silently deleted;
- **recall**: score = recency (exponential decay since the memory was last confirmed) +
  importance + relevance (embedding similarity), each min-max normalised over the candidates
  and weighted, as in Generative Agents (Park et al. 2023); the top k go into the prompt;
- **reflect**: every ``reflect_every`` new memories (or on demand), the model draws higher-level
  insights from recent memories; they are stored as memories that cite their sources.

Memories live in the namespace ``("memories", name, user_id)``: one user's are never searched
for another. The agent runs ``remember`` in the background after the reply; ``Agent.aclose``
flushes it. The store is SQLite with sqlite-vec (the default), Postgres with pgvector, or
in-process (``memory://``), from the one database URL.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.store.base import BaseStore, Item

from ponder.config import ConfigurationError, Settings
from ponder.db.persistence import open_store, stop_batching
from ponder.errors import NotFoundError
from ponder.models import chat_model, json_list
from ponder.models import embeddings as make_embeddings

ACTIVE, SUPERSEDED = "active", "superseded"


@dataclass
class MemoryRecord:
    """One memory of a user: a fact or a reflection, its importance (1-10) and its history.

    Times are ISO 8601 in UTC; ``status`` is "active" or "superseded"; ``score`` is the recall score
    when the record came from a search.
    """
    key: str
    text: str
    importance: float
    kind: str = "fact"                       # or "reflection"
    status: str = ACTIVE
    created_at: str = ""
    updated_at: str = ""                     # when last written or confirmed
    valid_to: str | None = None              # set when superseded
    supersedes: str | None = None            # the key of the version this one replaced
    superseded_by: str | None = None
    sources: list[str] = field(default_factory=list)   # a reflection's memories
    score: float | None = None               # the recall score, when recalled

    @classmethod
    def from_item(cls, item: Item, score: float | None = None) -> MemoryRecord:
        """The record stored in a LangGraph store ``Item`` (its key is the record's key)."""
        fields = {k: v for k, v in item.value.items() if k in cls.__dataclass_fields__}
        return cls(key=item.key, score=score, **fields)

    def value(self) -> dict[str, Any]:
        """The record as the store keeps it: every field but ``key`` and ``score``."""
        return {k: v for k, v in self.__dict__.items() if k not in ("key", "score")}


def _now() -> str:
    return datetime.now(UTC).isoformat()



class LongTermMemory:
    """Memories per user, written, consolidated, recalled and reflected on. ``url`` defaults to
    ``PONDER_DATABASE_URL``; ``model`` to ``PONDER_MODEL``; ``embeddings`` to
    ``PONDER_EMBEDDINGS``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        model: BaseChatModel | str | None = None,
        embeddings: Embeddings | str | None = None,
        name: str = "default",
        k: int = 4,
        weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
        decay_per_hour: float = 0.995,
        reflect_every: int = 10,
        similarity: float = 0.8,
        store: BaseStore | None = None,
    ) -> None:
        """``weights``: recency, importance, relevance. ``similarity``: how close (cosine) a
        stored memory must be for a new fact to be checked against it."""
        self.url, self.name, self.k = url, name, k
        self._model, self._embeddings = model, embeddings
        self.weights, self.decay_per_hour = weights, decay_per_hour
        self.reflect_every, self.similarity = reflect_every, similarity
        self._store, self._closers = store, []
        self._opening = asyncio.Lock()
        self._writing: dict[str, asyncio.Lock] = {}

    # -- the store -------------------------------------------------------------------------

    @property
    def model(self) -> BaseChatModel:
        """The chat model that extracts, compares and reflects (built from its string on first
        use)."""
        if not isinstance(self._model, BaseChatModel):
            self._model = chat_model(self._model)
        return self._model

    async def store(self) -> BaseStore:
        """The LangGraph store, opened on first use with a vector index over the memories' text.

        Raises ConfigurationError when there are no embeddings (neither ``embeddings=`` nor
        ``PONDER_EMBEDDINGS``).
        """
        async with self._opening:
            if self._store is None:
                embeddings = self._embeddings or Settings.from_env().embeddings
                if embeddings is None:
                    raise ConfigurationError(
                        "long-term memory needs embeddings to find related memories: pass "
                        "embeddings=... or set PONDER_EMBEDDINGS (e.g. local)")
                if isinstance(embeddings, str):
                    embeddings = make_embeddings(embeddings)
                dims = len(await embeddings.aembed_query("the size of a vector"))
                # Embed the text only ("text_fields" is the SQLite store's name for "fields").
                index = {"dims": dims, "embed": embeddings, "fields": ["text"],
                         "text_fields": ["text"]}
                self._store, self._closers = await open_store(self.url, index=index)
        return self._store

    def _namespace(self, user_id: str) -> tuple[str, ...]:
        return ("memories", self.name, user_id)

    # -- the agent's memory ----------------------------------------------------------------

    async def recall(self, query: str, *, user_id: str | None = None,
                     thread_id: str | None = None) -> str | None:
        """The user's best ``k`` memories as a bulleted list for the system message; None without
        a user or memories."""
        if user_id is None:
            return None
        memories = await self.search(user_id, query, self.k)
        if not memories:
            return None
        return "What you remember about this user:\n" + "\n".join(
            f"- {m.text}" for m in memories)

    async def remember(self, messages: Sequence[BaseMessage], *, user_id: str | None = None,
                       thread_id: str | None = None) -> None:
        """Extract what is worth keeping from a finished turn, consolidate it, and reflect
        when enough is new. Runs in the background of a turn."""
        if user_id is None:
            return
        turn = "\n".join(f"{'User' if isinstance(m, HumanMessage) else 'Assistant'}: {m.text}"
                         for m in messages if isinstance(m, HumanMessage | AIMessage) and m.text)
        if not turn:
            return
        reply = await self.model.ainvoke([
            SystemMessage("From this conversation turn, extract durable facts about the user "
                          "and their preferences that will matter in future conversations "
                          "(not small talk, not the assistant's own words). Reply with a JSON "
                          'list like [{"fact": "The user is vegetarian.", "importance": 7}] '
                          "(importance 1-10), or [] when there is nothing to keep."),
            HumanMessage(turn),
        ])
        facts = [(str(f["fact"]), float(f.get("importance", 5)))
                 for f in json_list(reply.text) if isinstance(f, dict) and f.get("fact")]
        for fact, importance in facts:
            await self.add(user_id, fact, importance=importance)

    # -- writing ---------------------------------------------------------------------------

    async def add(self, user_id: str, text: str, *, importance: float = 5.0,
                  kind: str = "fact", sources: Sequence[str] = ()) -> MemoryRecord:
        """Store ``text`` for the user, consolidated with what is stored (see the module)."""
        store = await self.store()
        namespace = self._namespace(user_id)
        lock = self._writing.setdefault(user_id, asyncio.Lock())
        async with lock:  # one consolidation at a time per user
            now = _now()
            new = MemoryRecord(uuid.uuid4().hex, text, max(1.0, min(10.0, importance)), kind,
                               created_at=now, updated_at=now, sources=list(sources))
            similar = [item for item in await store.asearch(
                namespace, query=text, filter={"status": ACTIVE}, limit=3)
                if item.score is not None and item.score >= self.similarity]
            if similar and kind == "fact":
                existing = MemoryRecord.from_item(similar[0])
                verdict = await self._compare(existing.text, text)
                if verdict == "SAME":
                    existing.updated_at = now
                    existing.importance = max(existing.importance, new.importance)
                    await store.aput(namespace, existing.key, existing.value())
                    return existing
                if verdict == "UPDATE":
                    existing.status, existing.valid_to = SUPERSEDED, now
                    existing.superseded_by, new.supersedes = new.key, existing.key
                    await store.aput(namespace, existing.key, existing.value(), index=False)
            await store.aput(namespace, new.key, new.value())
        if kind == "fact" and await self._count_towards_reflection(user_id):
            await self.reflect(user_id)
        return new

    async def _compare(self, existing: str, new: str) -> str:
        reply = await self.model.ainvoke([
            SystemMessage("You keep a memory about a user. Compare the stored memory with new "
                          "information. Reply with one word: SAME if the new information adds "
                          "nothing, UPDATE if it changes, corrects or contradicts the stored "
                          "memory, NEW if it is about something else."),
            HumanMessage(f"Stored memory: {existing}\nNew information: {new}"),
        ])
        verdict = reply.text.strip().upper()
        return next((v for v in ("SAME", "UPDATE", "NEW") if verdict.startswith(v)), "NEW")

    async def _count_towards_reflection(self, user_id: str) -> bool:
        """Count a new memory; True (and reset) once ``reflect_every`` have accumulated."""
        store = await self.store()
        namespace = ("memory-counters", self.name, user_id)
        item = await store.aget(namespace, "since-reflection")
        count = (item.value["count"] if item else 0) + 1
        due = count >= self.reflect_every
        await store.aput(namespace, "since-reflection", {"count": 0 if due else count},
                         index=False)
        return due

    async def reflect(self, user_id: str, recent: int = 20) -> list[MemoryRecord]:
        """Synthesise insights from the user's most recent memories; each cites its sources."""
        memories = [m for m in await self.list(user_id) if m.kind == "fact"]
        memories = sorted(memories, key=lambda m: m.updated_at, reverse=True)[:recent]
        if len(memories) < 2:
            return []
        numbered = "\n".join(f"{i}. {m.text}" for i, m in enumerate(memories, 1))
        reply = await self.model.ainvoke([
            SystemMessage("Here are memories about a user, numbered. Write at most 3 high-level "
                          "insights about the user that they support. Reply with a JSON list "
                          'like [{"insight": "...", "sources": [1, 4]}], citing the numbers.'),
            HumanMessage(numbered),
        ])
        insights = []
        for entry in json_list(reply.text):
            if not isinstance(entry, dict) or not entry.get("insight"):
                continue
            cited = [memories[n - 1].key for n in entry.get("sources", [])
                     if isinstance(n, int) and 1 <= n <= len(memories)]
            insights.append(await self.add(user_id, str(entry["insight"]), importance=8.0,
                                           kind="reflection", sources=cited))
        return insights

    # -- reading and managing --------------------------------------------------------------

    async def search(self, user_id: str, query: str, k: int | None = None) -> list[MemoryRecord]:
        """The user's ``k`` best memories for ``query`` by recency + importance + relevance."""
        store = await self.store()
        k = k or self.k
        items = await store.asearch(self._namespace(user_id), query=query,
                                     filter={"status": ACTIVE}, limit=max(20, 5 * k))
        if not items:
            return []
        now = datetime.now(UTC)
        hours = [(now - datetime.fromisoformat(i.value["updated_at"])).total_seconds() / 3600
                 for i in items]
        parts = [[self.decay_per_hour ** h for h in hours],
                 [i.value["importance"] for i in items],
                 [i.score or 0.0 for i in items]]
        normalised = [_min_max(values) for values in parts]
        scores = [sum(w * part[n] for w, part in zip(self.weights, normalised, strict=True))
                  for n in range(len(items))]
        ranked = sorted(zip(scores, items, strict=True), key=lambda p: p[0], reverse=True)
        return [MemoryRecord.from_item(item, score) for score, item in ranked[:k]]

    async def list(self, user_id: str, *, include_superseded: bool = False
                   ) -> list[MemoryRecord]:
        """Every active memory of the user (superseded ones too if asked), oldest first."""
        store = await self.store()
        found, offset = [], 0
        while True:
            page = await store.asearch(self._namespace(user_id), limit=100, offset=offset)
            found += page
            if len(page) < 100:
                break
            offset += 100
        records = [MemoryRecord.from_item(item) for item in found]
        records = [r for r in records if include_superseded or r.status == ACTIVE]
        return sorted(records, key=lambda r: r.created_at)

    async def edit(self, user_id: str, key: str, text: str) -> MemoryRecord:
        """A new version of a memory; the old one is kept, superseded."""
        store = await self.store()
        item = await store.aget(self._namespace(user_id), key)
        if item is None:
            raise NotFoundError(f"user {user_id!r} has no memory {key!r}: see ponder memory "
                                f"list --user {user_id}")
        old = MemoryRecord.from_item(item)
        now = _now()
        new = MemoryRecord(uuid.uuid4().hex, text, old.importance, old.kind, created_at=now,
                           updated_at=now, supersedes=key, sources=old.sources)
        old.status, old.valid_to, old.superseded_by = SUPERSEDED, now, new.key
        await store.aput(self._namespace(user_id), key, old.value(), index=False)
        await store.aput(self._namespace(user_id), new.key, new.value())
        return new

    async def delete(self, user_id: str, key: str) -> None:
        """Remove a memory for good (a user's request, not consolidation).

        Raises NotFoundError when the user has no memory ``key``."""
        store = await self.store()
        if await store.aget(self._namespace(user_id), key) is None:
            raise NotFoundError(f"user {user_id!r} has no memory {key!r}: see ponder memory "
                                f"list --user {user_id}")
        await store.adelete(self._namespace(user_id), key)

    async def aclose(self) -> None:
        """Close the store if this memory opened it (a store passed in is left open)."""
        if self._closers:  # a store of our own: stop its batching task with its connection
            stop_batching(self._store)
        for close in reversed(self._closers):
            await close()
        self._closers.clear()
        self._store = None


def _min_max(values: Sequence[float]) -> list[float]:
    low, high = min(values), max(values)
    if math.isclose(low, high):
        return [1.0] * len(values)
    return [(v - low) / (high - low) for v in values]
