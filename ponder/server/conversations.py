"""Which thread a chat completion continues, when the client names none.

Chat clients resend the whole conversation every turn. After each turn the conversation so far
(the request's messages and the reply) is stored under a digest, with its thread, per caller's
key and model. A later request continues that thread only when everything before its new
messages equals a stored conversation exactly and that conversation is still its thread's
latest; a request with no reply in it (one user message, "Hi") always starts a new thread, so two
clients that open the same way never share one. Two threads that reach the same conversation
make it ambiguous: it continues neither (the client's history seeds a new thread instead).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable

from sqlalchemy import Column, Float, MetaData, String, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ponder.db.tables import Tables

AMBIGUOUS = ""  # the thread of a conversation two threads reached
metadata = MetaData()
conversations_table = Table(
    "ponder_conversations", metadata,
    Column("digest", String(64), primary_key=True),  # sha256 of (key, model, messages)
    Column("thread_id", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
)


def digest(key: str | None, model: str, messages: Iterable[tuple[str, str]]) -> str:
    """The digest of a conversation: ``messages`` as (role, text) pairs, for a key and model."""
    return hashlib.sha256(json.dumps([key, model, list(messages)]).encode()).hexdigest()


class ConversationStore(Tables):
    """Conversation digests -> threads, in ponder's database (``url``, default
    ``PONDER_DATABASE_URL``)."""

    metadata = metadata

    async def find(self, conversation: str) -> str | None:
        """The thread whose latest conversation has this digest; None when there is none (or
        it is ambiguous, or its thread went on since)."""
        table = conversations_table
        engine = await self.engine()
        async with engine.connect() as conn:
            row = (await conn.execute(select(table.c.thread_id).where(
                table.c.digest == conversation))).first()
            if row is None or row.thread_id == AMBIGUOUS:
                return None
            latest = (await conn.execute(select(table.c.digest).where(
                table.c.thread_id == row.thread_id).order_by(
                table.c.created_at.desc()).limit(1))).first()
        return row.thread_id if latest.digest == conversation else None

    async def remember(self, conversation: str, thread_id: str) -> None:
        """Store that ``thread_id``'s conversation now has this digest; a digest another
        thread reached too becomes ambiguous."""
        table = conversations_table
        engine = await self.engine()
        insert = (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)
        async with engine.begin() as conn:
            added = await conn.execute(insert(table).values(
                digest=conversation, thread_id=thread_id, created_at=time.time()
            ).on_conflict_do_nothing())
            if added.rowcount == 0:
                await conn.execute(update(table).where(
                    table.c.digest == conversation, table.c.thread_id != thread_id).values(
                    thread_id=AMBIGUOUS))
