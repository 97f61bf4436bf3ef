"""InMemoryMemory: the simplest memory there is — notes in a list, recalled by shared words.

It serves small knowledge sources (a handbook, a FAQ), and tests that need a memory that really
recalls and remembers. Notes without a user are shared; a user's notes are recalled only for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from langchain_core.messages import BaseMessage, HumanMessage

from ponder.memory.knowledge.analysis import query_terms


def _terms(text: str) -> set[str]:
    # The knowledge base's analysis: any script (CJK as bigrams), no stop words.
    return set(query_terms(text))


@dataclass(frozen=True)
class Note:
    """A note's text, the user it belongs to (None: everyone's) and where it came from (a path)."""
    text: str
    user_id: str | None = None
    source: str | None = None


class InMemoryMemory:
    """Notes recalled by word overlap with the query; a finished turn's user messages are kept."""

    def __init__(self, notes: Iterable[str] = (), *, k: int = 3, learn: bool = True) -> None:
        self.notes: list[Note] = []
        self.k = k
        self.learn = learn
        for text in notes:
            self.add(text)

    @classmethod
    def from_files(cls, paths: Iterable[str | Path], **options) -> InMemoryMemory:
        """One note per paragraph (blank-line separated) of each text or Markdown file."""
        memory = cls(**options)
        for path in paths:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
            for paragraph in re.split(r"\n\s*\n", text):
                if paragraph.strip():
                    memory.add(paragraph.strip(), source=str(path))
        return memory

    def add(self, text: str, *, user_id: str | None = None, source: str | None = None) -> None:
        """Keep a note (for ``user_id`` only, when given)."""
        self.notes.append(Note(text, user_id, source))

    async def recall(self, query: str, *, user_id: str | None = None,
                     thread_id: str | None = None) -> str | None:
        """The ``k`` notes sharing the most words with ``query`` (stopwords aside), joined by
        blank lines; earlier notes win ties. Only shared notes and the user's own count. None
        when none match."""
        wanted = _terms(query)
        scored = [
            (len(wanted & _terms(note.text)), -i, note)
            for i, note in enumerate(self.notes)
            if note.user_id is None or note.user_id == user_id
        ]
        best = sorted((s for s in scored if s[0] > 0), key=lambda s: s[:2], reverse=True)
        if not best:
            return None
        return "\n\n".join(note.text for _, _, note in best[: self.k])

    async def remember(self, messages: Sequence[BaseMessage], *, user_id: str | None = None,
                       thread_id: str | None = None) -> None:
        """With ``learn`` and a user, keep each of the user's messages as "The user said: ..."
        notes."""
        if not self.learn or user_id is None:
            return
        for message in messages:
            if isinstance(message, HumanMessage) and str(message.content).strip():
                self.add(f"The user said: {message.content}", user_id=user_id)
