"""API keys, stored hashed in the one database (``PONDER_DATABASE_URL``).

A key is shown once, when it is made; the database keeps its SHA-256 (keys are 256 random bits, so
a fast hash is as good as a slow one). Each key has an id, a name, optional limits (requests and
tokens per minute; dollars per UTC day, charged through ``models.budget_store``) and a
revocation time.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, select, update

from ponder.config import ConfigurationError
from ponder.db.tables import Tables
from ponder.errors import NotFoundError
from ponder.models import Budget

metadata = MetaData()
api_keys = Table(
    "ponder_api_keys", metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("requests_per_minute", Integer, nullable=True),
    Column("tokens_per_minute", Integer, nullable=True),
    Column("usd_per_day", Float, nullable=True),
)


@dataclass(frozen=True)
class APIKey:
    """An API key's record (never its secret): id, name, creation and revocation times (epoch
    seconds) and its limits (requests and tokens per minute, US dollars per UTC day; None: no
    limit)."""
    id: str
    name: str
    created_at: float
    revoked_at: float | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    usd_per_day: float | None = None

    def budget(self) -> Budget | None:
        """The key's daily dollar budget, if it has one."""
        return Budget(usd=self.usd_per_day) if self.usd_per_day is not None else None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore(Tables):
    """The API keys in the database at ``url`` (default ``PONDER_DATABASE_URL``), stored as
    SHA-256 hashes."""
    metadata = metadata

    async def create(self, name: str, *, requests_per_minute: int | None = None,
                     tokens_per_minute: int | None = None, usd_per_day: float | None = None
                     ) -> tuple[APIKey, str]:
        """A new key: its record, and the secret (shown once, never stored). ConfigurationError
        for a blank name or a negative ``usd_per_day``."""
        if not name.strip():
            raise ConfigurationError("a key needs a name, e.g. ponder keys create mobile-app")
        if usd_per_day is not None:
            try:
                Budget(usd=usd_per_day)
            except ConfigurationError:
                raise ConfigurationError(f"--usd-per-day must be a number of dollars, 0 or "
                                         f"more, not {usd_per_day!r}") from None
        secret = "pk-" + secrets.token_urlsafe(32)
        key = APIKey(f"key_{secrets.token_hex(6)}", name.strip(), time.time(), None,
                     requests_per_minute, tokens_per_minute, usd_per_day)
        engine = await self.engine()
        async with engine.begin() as conn:
            await conn.execute(api_keys.insert().values(
                id=key.id, name=key.name, hash=_hash(secret), created_at=key.created_at,
                requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
                usd_per_day=usd_per_day))
        return key, secret

    async def list(self) -> list[APIKey]:
        """Every key, revoked ones too, oldest first."""
        engine = await self.engine()
        async with engine.connect() as conn:
            rows = await conn.execute(select(api_keys).order_by(api_keys.c.created_at))
            return [_key(row) for row in rows]

    async def revoke(self, key_id: str) -> None:
        """Revoke the key with ``key_id``. Raises NotFoundError when no active key has it."""
        engine = await self.engine()
        async with engine.begin() as conn:
            done = await conn.execute(update(api_keys).where(
                api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)
            ).values(revoked_at=time.time()))
        if done.rowcount == 0:
            raise NotFoundError(f"no active key has the id {key_id!r}: see ponder keys list")

    async def active(self) -> bool:
        """Whether any key is unrevoked (then every route but /health needs one)."""
        engine = await self.engine()
        async with engine.connect() as conn:
            row = await conn.execute(select(api_keys.c.id).where(
                api_keys.c.revoked_at.is_(None)).limit(1))
            return row.first() is not None

    async def verify(self, secret: str) -> APIKey | None:
        """The unrevoked key whose secret is ``secret``; None for any other."""
        engine = await self.engine()
        async with engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(
                api_keys.c.hash == _hash(secret), api_keys.c.revoked_at.is_(None)))).first()
        return _key(row) if row else None


def _key(row) -> APIKey:
    return APIKey(row.id, row.name, row.created_at, row.revoked_at, row.requests_per_minute,
                  row.tokens_per_minute, row.usd_per_day)
