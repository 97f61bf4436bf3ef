"""Every SQLite connection ponder opens comes from one SQLite library (see ponder/db/sqlite.py):
two copies of SQLite on one file in one process drop each other's locks and corrupt it."""

import asyncio

from ponder import Agent
from ponder.db.persistence import open_persistence
from ponder.db.sqlite import sqlite_module
from ponder.graphs.runs import RunRecorder
from ponder.memory.knowledge import Document, KnowledgeBase
from ponder.testing import ScriptedChatModel


async def test_checkpoints_stores_tables_and_knowledge_share_one_library(tmp_path):
    url = f"sqlite:///{tmp_path}/ponder.db"
    library = sqlite_module().Connection
    persistence = await open_persistence(url)
    assert isinstance(persistence.checkpointer.conn._connection, library)
    assert isinstance(persistence.store.conn._connection, library)
    await persistence.aclose()
    recorder = RunRecorder(url)
    engine = await recorder.engine()
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.driver_connection._connection, library)
    await recorder.aclose()


async def test_an_agent_and_its_knowledge_base_write_one_file_concurrently(tmp_path):
    url = f"sqlite:///{tmp_path}/ponder.db"
    kb = KnowledgeBase(url)
    agent = Agent("a", ScriptedChatModel(replies=lambda m: "ok"), memory=kb, checkpointer=url)

    async def ingest(i):
        await kb.add([Document(f"Note {i} about tea number {i}.", f"note-{i}")])

    await asyncio.gather(*(ingest(i) for i in range(30)),
                         *(agent.aask(f"tea {i}?", thread_id=f"t{i}") for i in range(30)))
    assert (await kb.stats())["sources"] == 30
    check = sqlite_module().connect(f"{tmp_path}/ponder.db")
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
    await agent.aclose()
