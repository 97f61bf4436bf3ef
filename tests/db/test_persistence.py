"""Persistence from one URL: crash recovery and checkpoint retention, on SQLite and Postgres."""

import asyncio
import sqlite3
import subprocess
import sys
import textwrap

import psycopg
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from ponder import Agent
from ponder.config import ConfigurationError
from ponder.db.persistence import open_persistence
from ponder.testing import ScriptedChatModel, tool_calls

# A process that runs one turn and dies (os._exit, no cleanup) inside the tool the first time.
CRASHING_RUN = textwrap.dedent("""
    import asyncio, os, sys
    from ponder import Agent
    from ponder.testing import ScriptedChatModel, tool_calls

    url, marker, durability = sys.argv[1], sys.argv[2], sys.argv[3]

    def launch(target: str) -> str:
        '''Launch the probe.'''
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(9)  # the crash: mid-step, nothing flushed or closed
        return f"launched {target}"

    async def main():
        model = ScriptedChatModel(replies=[tool_calls(("launch", {"target": "moon"}))])
        agent = Agent("mission", model, tools=[launch], checkpointer=url, durability=durability)
        await agent.ainvoke("launch to the moon", thread_id="mission-1")

    asyncio.run(main())
""")


def launch(target: str) -> str:
    """Launch the probe."""
    return f"launched {target}"


def mission_model() -> ScriptedChatModel:
    return ScriptedChatModel(replies=lambda m: "The probe is on its way." if m[-1].type == "tool"
                             else tool_calls(("launch", {"target": "moon"})))


async def resume_after_crash(url: str, tmp_path, durability: str) -> ScriptedChatModel:
    script = tmp_path / "crash.py"
    script.write_text(CRASHING_RUN)
    died = await asyncio.to_thread(
        subprocess.run, [sys.executable, str(script), url, str(tmp_path / "crashed"), durability],
        capture_output=True, text=True, timeout=60)
    assert died.returncode == 9, died.stderr
    model = mission_model()  # a new process: nothing survives but the database
    agent = Agent("mission", model, tools=[launch], checkpointer=url)
    try:
        pending = await agent.aget_state("mission-1")
        assert pending.values["messages"][0].content == "launch to the moon"
        state = await agent.ainvoke(None, thread_id="mission-1")
    finally:
        await agent.aclose()
    contents = [m.content for m in state["messages"]]
    assert contents[0] == "launch to the moon" and contents.count("launch to the moon") == 1
    assert contents[-2:] == ["launched moon", "The probe is on its way."]
    return model


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_crashed_run_resumes_from_its_last_checkpoint(backend, tmp_path, request):
    url = (f"sqlite:///{tmp_path}/crash.db" if backend == "sqlite"
           else request.getfixturevalue("postgres_url"))
    # Each finished step is saved before the next starts (sync durability, the default), so the
    # resumed run goes straight to the tool and calls the model once, to finish.
    model = await resume_after_crash(url, tmp_path, "sync")
    assert len(model.calls) == 1 and model.calls[0][-1].content == "launched moon"


async def long_conversation(url_or_saver, turns: int, keep: int) -> Agent:
    model = ScriptedChatModel(replies=lambda m: tool_calls(("launch", {"target": "x"}))
                              if m[-1].type == "human" else "done")
    agent = Agent("chatty", model, tools=[launch], checkpointer=url_or_saver,
                  keep_checkpoints=keep)
    for i in range(turns):
        await agent.ainvoke(f"turn {i}", thread_id="long")
        await agent.ainvoke(f"other {i}", thread_id="other")
    await agent.flush()
    state = await agent.aget_state("long")
    assert len(state.values["messages"]) == 4 * turns  # retention never loses the conversation
    assert state.values["messages"][-1].content == "done"
    return agent


async def test_retention_bounds_checkpoints_per_thread_sqlite(tmp_path):
    path = tmp_path / "keep.db"
    agent = await long_conversation(f"sqlite:///{path}", turns=12, keep=5)
    await agent.aclose()
    db = sqlite3.connect(path)
    counts = dict(db.execute("SELECT thread_id, COUNT(*) FROM checkpoints GROUP BY thread_id"))
    orphans = db.execute("SELECT COUNT(*) FROM writes w WHERE NOT EXISTS (SELECT 1 FROM "
                         "checkpoints c WHERE c.checkpoint_id = w.checkpoint_id)").fetchone()[0]
    assert counts == {"long": 5, "other": 5} and orphans == 0
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_retention_bounds_checkpoints_and_blobs_postgres(postgres_url):
    agent = await long_conversation(postgres_url, turns=12, keep=5)
    await agent.aclose()
    with psycopg.connect(postgres_url) as db:
        checkpoints = db.execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = 'long'"
                                 ).fetchone()[0]
        blobs = db.execute("SELECT COUNT(*) FROM checkpoint_blobs WHERE thread_id = 'long' "
                           "AND channel = 'messages'").fetchone()[0]
    assert checkpoints == 5
    assert blobs <= 5  # one messages version per kept checkpoint at most, not one per step


async def test_retention_in_memory():
    saver = InMemorySaver()
    await long_conversation(saver, turns=10, keep=3)
    assert len(saver.storage["long"][""]) == 3
    assert len({k for k in saver.blobs if k[0] == "long" and k[2] == "messages"}) <= 3


async def test_unsupported_and_unreachable_databases_say_what_to_do(tmp_path):
    with pytest.raises(ConfigurationError, match="not a supported database URL.*sqlite:///"):
        await open_persistence("mysql://root:secret@db/x")
    with pytest.raises(ConfigurationError, match="folder of the database"):
        await open_persistence(f"sqlite:///{tmp_path}/missing/dir/x.db")
    with pytest.raises(ConfigurationError, match=r"cannot connect to postgresql://u:\*\*\*@"):
        await open_persistence("postgresql://u:secret@127.0.0.1:1/none?connect_timeout=1")


async def test_the_default_database_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PONDER_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    agent = Agent("plain", ScriptedChatModel(replies=["hello", "again"]))
    await agent.ainvoke("hi", thread_id="t")
    await agent.aclose()
    reopened = Agent("plain", ScriptedChatModel(replies=["again"]))
    state = await reopened.ainvoke("and now?", thread_id="t")
    await reopened.aclose()
    assert [m.content for m in state["messages"]] == ["hi", "hello", "and now?", "again"]
    assert (tmp_path / "env.db").exists()


async def test_processes_opening_a_fresh_postgres_database_at_once_all_succeed(postgres_url):
    """Workers starting together on a new database: each opens the checkpointer and store, and
    ponder's tables, at the same moment (separate pools, as separate processes would). Run side
    by side, the schema migrations collided (duplicate keys, deadlocks) and the runs failed."""
    from ponder.graphs.runs import RunRecorder

    opened = await asyncio.gather(*[open_persistence(postgres_url) for _ in range(4)],
                                  return_exceptions=True)
    recorders = [RunRecorder(postgres_url) for _ in range(4)]
    made = await asyncio.gather(*[r.engine() for r in recorders], return_exceptions=True)
    for persistence in opened:
        if not isinstance(persistence, BaseException):
            await persistence.aclose()
    for recorder in recorders:
        await recorder.aclose()
    assert [type(x).__name__ for x in opened + made
            if isinstance(x, BaseException)] == []
    agent = Agent("echo", ScriptedChatModel(replies=["noted"]), checkpointer=postgres_url)
    assert (await agent.ainvoke("hello", thread_id="t"))["messages"][-1].content == "noted"
    await agent.aclose()


async def test_rewind_discards_what_came_after_a_checkpoint_in_memory():
    from ponder.db.persistence import rewind_checkpoints

    saver = InMemorySaver()
    agent = Agent("a", ScriptedChatModel(replies=["one", "two"]), checkpointer=saver)
    await agent.ainvoke("first", thread_id="t")
    mark = (await agent.aget_state("t")).config["configurable"]["checkpoint_id"]
    await agent.ainvoke("second", thread_id="t")
    await rewind_checkpoints(saver, "t", mark)
    assert [m.content for m in (await agent.aget_state("t")).values["messages"]] == [
        "first", "one"]
    await rewind_checkpoints(saver, "t", None)
    assert (await agent.aget_state("t")).values == {}


async def test_a_saver_of_ones_own_is_not_rewound_and_says_why():
    from ponder.db.persistence import rewind_checkpoints

    class OwnSaver(InMemorySaver):
        """A checkpointer ponder does not know the storage of."""

    saver = OwnSaver()
    agent = Agent("a", ScriptedChatModel(replies=["one"]), checkpointer=saver)
    await agent.ainvoke("first", thread_id="t")
    mark = (await agent.aget_state("t")).parent_config["configurable"]["checkpoint_id"]
    with pytest.raises(ConfigurationError, match="OwnSaver cannot be rewound.*'interrupt'"):
        await rewind_checkpoints(saver, "t", mark)
    assert [m.content for m in (await agent.aget_state("t")).values["messages"]] == [
        "first", "one"]  # nothing was deleted
