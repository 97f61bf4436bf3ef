"""The one database URL parser, and memory:// refused in one line by every command that must
keep its data."""

import os
from pathlib import Path

import pytest

from ponder.db.url import parse_url
from ponder.errors import ConfigurationError
from tests.helpers.cli import ponder


def test_the_three_kinds_and_their_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = parse_url("sqlite:///data.db")
    assert (relative.kind, relative.path) == ("sqlite", "data.db")
    assert relative.sqlalchemy == "sqlite+aiosqlite:///data.db"
    absolute = parse_url(f"sqlite:///{tmp_path}/a.db?mode=rwc")
    assert absolute.path == f"{tmp_path}/a.db"
    assert parse_url("sqlite:///:memory:").path == ":memory:"
    assert parse_url("sqlite:///~/x.db").path == str(Path.home() / "x.db")
    postgres = parse_url("postgres+psycopg://ana:s3cret@db.example:5432/app")
    assert postgres.kind == "postgres"
    assert postgres.conninfo == "postgresql://ana:s3cret@db.example:5432/app"
    assert postgres.sqlalchemy == "postgresql+psycopg://ana:s3cret@db.example:5432/app"
    assert postgres.redacted == "postgres+psycopg://ana:***@db.example:5432/app"
    assert parse_url("memory://").kind == parse_url("memory").kind == "memory"
    monkeypatch.setenv("PONDER_DATABASE_URL", "sqlite:///env.db")
    assert parse_url().path == "env.db"


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://ana:s3cret@h/db", r"'mysql://ana:\*\*\*@h/db' is not a supported database URL: "
                                r"use sqlite:///ponder.db"),
    ("sqlite://relative.db", "is not a sqlite URL: write sqlite:///relative/path.db"),
    ("sqlite:///no/such/folder/x.db", "the folder of the database 'no/such/folder/x.db' does "
                                      "not exist: create"),
])
def test_bad_urls_say_what_to_write(url, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_url(url)


def test_a_url_of_the_wrong_kind_says_which_to_use():
    with pytest.raises(ConfigurationError, match="keeps nothing beyond this process"):
        parse_url("memory://").require(("sqlite", "postgres"), "run records")
    with pytest.raises(ConfigurationError, match="a queue needs postgresql://"):
        parse_url("sqlite:///x.db").require("postgres", "a queue")


@pytest.mark.parametrize("command", [
    ["run", "agent.yaml", "hi"], ["chat", "agent.yaml"], ["serve", "agent.yaml"], ["worker"],
    ["runs", "list"], ["schedule", "list"], ["keys", "list"], ["kb", "stats"],
    ["memory", "list", "--user", "ana"],
], ids=lambda c: c[0])
def test_commands_that_keep_data_refuse_memory_in_one_line(command, tmp_path):
    done = ponder(*command, env={"PONDER_DATABASE_URL": "memory://"}, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: ponder {command[0]} cannot use memory://, which keeps nothing beyond this "
        f"process: use sqlite:///ponder.db or postgresql://user:password@host:5432/db"]
    assert os.listdir(tmp_path) == []  # nothing was made


def test_the_demo_runs_on_memory(tmp_path):
    done = ponder("demo", env={"PONDER_DATABASE_URL": "memory://"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "The thread holds 6 messages" in done.stdout and os.listdir(tmp_path) == []
