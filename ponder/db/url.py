"""Database URLs: the one place a ``PONDER_DATABASE_URL`` is read.

Three kinds: ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` (``~`` expanded; the
default is ``sqlite:///ponder.db``), ``postgresql://user:password@host:5432/db`` (also
``postgres://`` and a SQLAlchemy driver suffix such as ``postgresql+psycopg://``), and
``memory://``, which keeps checkpoints and the long-term store in the process, and nothing that
must outlive it or be shared with another process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ponder.config import Settings
from ponder.errors import ConfigurationError

Kind = Literal["sqlite", "postgres", "memory"]

_SQLITE = re.compile(r"^sqlite(\+\w+)?://")
_POSTGRES = re.compile(r"^postgres(ql)?(\+\w+)?://")
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed database URL. ``url`` is the text given; ``path`` the SQLite file (or
    ``":memory:"``) of a sqlite URL."""

    url: str
    kind: Kind
    path: str | None = None

    @property
    def redacted(self) -> str:
        """The URL with its password masked, for messages and logs."""
        return _PASSWORD.sub(r"\1***@", self.url)

    @property
    def conninfo(self) -> str:
        """The ``postgresql://`` connection string psycopg takes."""
        self.require("postgres", "a psycopg connection")
        return _POSTGRES.sub("postgresql://", self.url)

    @property
    def sqlalchemy(self) -> str:
        """The URL of the async SQLAlchemy driver: aiosqlite or psycopg."""
        self.require(("sqlite", "postgres"), "SQLAlchemy")
        if self.kind == "sqlite":
            return f"sqlite+aiosqlite:///{self.path}"
        return _POSTGRES.sub("postgresql+psycopg://", self.url)

    def require(self, kinds: Kind | tuple[Kind, ...], what: str) -> DatabaseURL:
        """This URL, when ``what`` can use its kind; else ConfigurationError saying which to
        use."""
        kinds = (kinds,) if isinstance(kinds, str) else kinds
        if self.kind in kinds:
            return self
        if self.kind == "memory":
            raise ConfigurationError(
                f"{what} cannot use memory://, which keeps nothing beyond this process: use "
                f"sqlite:///ponder.db or postgresql://user:password@host:5432/db")
        examples = {"sqlite": "sqlite:///ponder.db", "postgres": "postgresql://user@host/db",
                    "memory": "memory://"}
        raise ConfigurationError(f"{what} needs {' or '.join(examples[k] for k in kinds)}, "
                                 f"not {self.redacted}")


def parse_url(url: str | None = None) -> DatabaseURL:
    """``url`` (default ``PONDER_DATABASE_URL``) parsed; ConfigurationError saying what to
    write when it is not a database URL ponder knows, or names a folder that does not exist."""
    url = (url or Settings.from_env().database_url).strip()
    if url in ("memory://", "memory"):
        return DatabaseURL("memory://", "memory")
    if _POSTGRES.match(url):
        return DatabaseURL(url, "postgres")
    if _SQLITE.match(url):
        return DatabaseURL(url, "sqlite", _sqlite_file(url))
    shown = _PASSWORD.sub(r"\1***@", url)
    raise ConfigurationError(
        f"PONDER_DATABASE_URL={shown!r} is not a supported database URL: use "
        f"sqlite:///ponder.db (the default), postgresql://user:password@host:5432/db, or "
        f"memory://")


def _sqlite_file(url: str) -> str:
    path = _SQLITE.sub("", url)
    if not path.startswith("/"):
        raise ConfigurationError(f"{url!r} is not a sqlite URL: write sqlite:///relative/path.db "
                                 "or sqlite:////absolute/path.db")
    path = path[1:].split("?", 1)[0]
    if not path or path == ":memory:":
        return ":memory:"
    path = str(Path(path).expanduser())
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise ConfigurationError(f"the folder of the database {path!r} does not exist: "
                                 f"create {folder} or choose another PONDER_DATABASE_URL")
    return path
