"""Stored responses of the Responses API: each one's JSON and the thread it continued, per
caller's key, so ``GET /v1/responses/{id}`` returns it and ``previous_response_id`` goes on in
its thread. A request with ``store: false`` leaves nothing here."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Float, MetaData, String, Table, Text, insert, select

from ponder.db.tables import Tables

metadata = MetaData()
responses_table = Table(
    "ponder_responses", metadata,
    Column("id", String(100), primary_key=True),  # resp_<hex>
    Column("key_id", String(100), nullable=True),  # the caller's API key (None: no keys)
    Column("model", String(200), nullable=False),  # the agent's name
    Column("thread_id", String(300), nullable=False),
    Column("body", Text, nullable=False),  # the Response object, as JSON
    Column("created_at", Float, nullable=False),
)


@dataclass(frozen=True)
class StoredResponse:
    """A stored response: its agent (``model``), its thread and its Response object (a dict)."""

    id: str
    model: str
    thread_id: str
    body: dict[str, Any]


class ResponseStore(Tables):
    """Responses by id, in ponder's database (``url``, default ``PONDER_DATABASE_URL``)."""

    metadata = metadata

    async def put(self, key_id: str | None, model: str, thread_id: str,
                  body: dict[str, Any]) -> None:
        """Store a finished response (``body["id"]`` is its id) under the caller's key."""
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(insert(responses_table).values(
                id=body["id"], key_id=key_id, model=model, thread_id=thread_id,
                body=json.dumps(body), created_at=time.time()))

    async def get(self, response_id: str, key_id: str | None) -> StoredResponse | None:
        """The response with this id stored under this key; None when there is none (another
        key's responses are not seen)."""
        table = responses_table
        engine = await self.engine()
        key = table.c.key_id.is_(None) if key_id is None else table.c.key_id == key_id
        async with engine.connect() as conn:
            row = (await conn.execute(select(table).where(table.c.id == response_id, key))
                   ).first()
        if row is None:
            return None
        return StoredResponse(row.id, row.model, row.thread_id, json.loads(row.body))
