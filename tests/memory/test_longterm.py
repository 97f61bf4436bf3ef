"""Long-term memory on SQLite (sqlite-vec) and Postgres (pgvector): extraction,
consolidation (duplicates and contradictions), the recall score, reflection, isolation across
concurrent users, and management."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from ponder.errors import NotFoundError
from ponder.memory.longterm import SUPERSEDED, LongTermMemory
from ponder.testing import HashingEmbeddings, ScriptedChatModel


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/memory.db"
    return request.getfixturevalue("postgres_url")


def _model(compare="NEW", facts=None, insights=None):
    """Answers extraction from ``facts`` (by the user's message), comparison with ``compare``,
    reflection with ``insights``."""
    def reply(messages):
        system, text = messages[0].content, messages[-1].content
        if system.startswith("From this conversation turn"):
            user_line = text.splitlines()[0].removeprefix("User: ")
            return json.dumps([{"fact": f, "importance": i} for f, i in facts[user_line]])
        if system.startswith("You keep a memory"):
            return compare(text) if callable(compare) else compare
        if system.startswith("Here are memories"):
            return json.dumps(insights)
        raise AssertionError(system)
    return ScriptedChatModel(replies=reply)


def _turn(user, assistant="Noted."):
    return [HumanMessage(user), AIMessage(assistant)]


async def test_facts_are_extracted_and_recalled_for_their_user_only(database_url):
    facts = {"I am vegetarian and live in Lyon.": [("The user is vegetarian.", 8),
                                                   ("The user lives in Lyon.", 6)],
             "I love jazz.": [("The user loves jazz.", 5)]}
    memory = LongTermMemory(database_url, model=_model(facts=facts),
                            embeddings=HashingEmbeddings(64), reflect_every=100)
    await asyncio.gather(
        memory.remember(_turn("I am vegetarian and live in Lyon."), user_id="ana"),
        memory.remember(_turn("I love jazz."), user_id="ben"))
    assert sorted(m.text for m in await memory.list("ana")) == [
        "The user is vegetarian.", "The user lives in Lyon."]
    assert [m.text for m in await memory.list("ben")] == ["The user loves jazz."]
    recalled = await memory.recall("what food does the user like? vegetarian", user_id="ana")
    assert "The user is vegetarian." in recalled and "jazz" not in recalled
    assert "vegetarian" not in (await memory.recall("vegetarian", user_id="ben") or "")
    assert await memory.recall("anything", user_id=None) is None
    await memory.aclose()


async def test_a_duplicate_refreshes_and_a_contradiction_supersedes(database_url):
    def compare(text):
        return "SAME" if "drinks green tea daily" in text.split("New information:")[1] \
            else "UPDATE"

    memory = LongTermMemory(database_url, model=_model(compare=compare),
                            embeddings=HashingEmbeddings(64), similarity=0.5,
                            reflect_every=100)
    first = await memory.add("u", "The user drinks green tea daily.", importance=4)
    same = await memory.add("u", "The user drinks green tea daily.", importance=7)
    assert same.key == first.key and same.importance == 7
    changed = await memory.add("u", "The user drinks black tea daily now.", importance=6)
    active = await memory.list("u")
    assert [m.text for m in active] == ["The user drinks black tea daily now."]
    everything = {m.key: m for m in await memory.list("u", include_superseded=True)}
    old = everything[first.key]
    assert old.status == SUPERSEDED and old.valid_to and old.superseded_by == changed.key
    assert everything[changed.key].supersedes == first.key
    await memory.aclose()


async def test_recall_orders_by_recency_importance_and_relevance(tmp_path):
    memory = LongTermMemory(f"sqlite:///{tmp_path}/m.db", model=_model(),
                            embeddings=HashingEmbeddings(256), similarity=1.1, k=3,
                            reflect_every=100)
    store = await memory.store()
    old = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    for key, text, importance, when in [
        ("a", "The user's cat is called Miso.", 2, old),
        ("b", "The user's cat is allergic to fish.", 9, old),
        ("c", "The user's cat is called Miso.", 2, datetime.now(UTC).isoformat()),
        ("d", "The user plays chess on Sundays.", 9, datetime.now(UTC).isoformat()),
    ]:
        await store.aput(("memories", "default", "u"), key, {
            "text": text, "importance": importance, "kind": "fact", "status": "active",
            "created_at": when, "updated_at": when, "sources": []})
    # Each part is min-max normalised over the candidates, then weighted.
    memory.weights = (1.0, 1.0, 3.0)  # recency, importance, relevance
    ranked = await memory.search("u", "what is the cat called", k=4)
    keys = [m.key for m in ranked]
    # c beats a (the same memory, but recent); relevance puts both Miso memories above chess,
    # though chess is recent and important; scores descend.
    assert keys.index("c") < keys.index("a") < keys.index("d")
    assert all(x.score >= y.score for x, y in zip(ranked, ranked[1:], strict=False))
    memory.weights = (0.0, 1.0, 0.0)  # importance alone
    assert {m.key for m in await memory.search("u", "cat", k=2)} == {"b", "d"}
    await memory.aclose()


async def test_reflection_cites_its_sources(database_url):
    facts = {f"turn {i}": [(fact, 5)] for i, fact in enumerate([
        "The user runs every morning.", "The user signed up for a marathon.",
        "The user tracks their heart rate."])}
    insights = [{"insight": "The user is training seriously for endurance running.",
                 "sources": [1, 2, 3]}]
    memory = LongTermMemory(database_url, model=_model(facts=facts, insights=insights),
                            embeddings=HashingEmbeddings(64), reflect_every=3, similarity=1.1)
    for i in range(3):
        await memory.remember(_turn(f"turn {i}"), user_id="u")
    memories = await memory.list("u")
    [reflection] = [m for m in memories if m.kind == "reflection"]
    facts_by_key = {m.key: m.text for m in memories if m.kind == "fact"}
    assert sorted(facts_by_key[k] for k in reflection.sources) == sorted(
        f for [(f, _)] in facts.values())
    assert reflection.importance == 8
    await memory.aclose()


async def test_management_edit_and_delete(tmp_path):
    memory = LongTermMemory(f"sqlite:///{tmp_path}/m.db", model=_model(),
                            embeddings=HashingEmbeddings(64), similarity=1.1)
    kept = await memory.add("u", "The user prefers email.")
    edited = await memory.edit("u", kept.key, "The user prefers phone calls.")
    assert [m.text for m in await memory.list("u")] == ["The user prefers phone calls."]
    assert edited.supersedes == kept.key
    await memory.delete("u", edited.key)
    with pytest.raises(NotFoundError, match="user 'u' has no memory 'nope': see ponder memory"):
        await memory.delete("u", "nope")
    assert await memory.list("u") == []
    with pytest.raises(KeyError, match="user 'u' has no memory 'nope'"):
        await memory.edit("u", "nope", "x")
    await memory.aclose()


@pytest.mark.timeout(600)  # five CLI processes that each load torch: ~20 s apiece when busy
def test_ponder_memory_lists_searches_and_deletes(tmp_path):
    from ponder.sync import run_sync
    from tests.helpers.cli import ponder

    url = f"sqlite:///{tmp_path}/m.db"
    memory = LongTermMemory(url, model=_model(), embeddings="local", similarity=1.1)
    kept = run_sync(lambda: memory.add("ana", "The user is vegetarian.", importance=8))
    run_sync(lambda: memory.add("ana", "The user lives in Lyon.", importance=3))
    run_sync(memory.aclose)
    env = {"PONDER_DATABASE_URL": url, "PONDER_EMBEDDINGS": "local"}
    listed = ponder("memory", "list", "--user", "ana", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["text"] for line in listed.stdout.splitlines()] == [
        "The user is vegetarian.", "The user lives in Lyon."]
    assert "no memories" in ponder("memory", "list", "--user", "ben", env=env).stdout
    found = ponder("memory", "search", "what does she eat", "--user", "ana", "-k", "1",
                   env=env)
    assert "The user is vegetarian." in found.stdout
    assert f"deleted {kept.key}" in ponder("memory", "delete", kept.key, "--user", "ana",
                                           env=env).stdout
    missing = ponder("memory", "delete", "nope", "--user", "ana", env=env)
    assert missing.returncode == 2 and "has no memory 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr
