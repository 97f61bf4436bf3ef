"""The `ponder` command: real processes, as a user runs them."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ponder.testing import FakeOpenAIServer, tool_calls

PONDER = [sys.executable, "-m", "ponder.cli"]


def ponder(*args, env=None, input=None, cwd=None):
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("PONDER_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL")}
    environment.update(env or {})
    return subprocess.run([*PONDER, *args], capture_output=True, text=True, env=environment,
                          input=input, cwd=cwd, timeout=120)


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "helper.yaml"
    path.write_text(textwrap.dedent("""
        name: helper
        profile: {role: a terse helper}
        tools: [calculator]
    """))
    return path


def test_version_and_help():
    assert ponder("--version").stdout.strip().startswith("ponder 0.")
    helped = ponder("--help")
    assert helped.returncode == 0
    for command in ("run", "chat", "demo"):
        assert command in helped.stdout


def test_demo_runs_offline(tmp_path):
    done = ponder("demo", cwd=tmp_path, env={"PONDER_DATABASE_URL": "sqlite:///demo.db"})
    assert done.returncode == 0, done.stderr
    first_line = done.stdout.splitlines()[0]
    assert "No model is configured" in first_line and "offline scripted model" in first_line
    assert "calculator" in done.stdout and "$42.40" in done.stdout
    assert 'You asked: "How much are 3 tins of Sencha' in done.stdout
    assert (tmp_path / "demo.db").exists()


def test_run_against_an_openai_compatible_server(spec, tmp_path):
    replies = [tool_calls(("calculator", {"expression": "6 * 7"})), "The answer is 42.",
               "You asked about 6 times 7."]
    with FakeOpenAIServer(replies) as srv:
        env = {"OPENAI_BASE_URL": srv.base_url,
               "PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/runs.db"}
        first = ponder("run", str(spec), "what is 6 times 7?", "--model", "openai:scripted",
                       "--json", "--thread", "t1", env=env)
        plain = ponder("run", str(spec), "what did I ask?", "--model", "openai:scripted",
                       "--thread", "t1", env=env)
        sent = srv.requests[-1]["messages"]
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["thread_id"] == "t1" and result["output"] == "The answer is 42."
    assert result["usage"]["calls"] == 2 and result["usage"]["total_tokens"] > 0
    assert plain.stdout.strip() == "You asked about 6 times 7."
    assert sent[0]["role"] == "system" and "a terse helper" in sent[0]["content"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["what is 6 times 7?",
                                                                  "what did I ask?"]


def test_chat_streams_replies(spec, tmp_path):
    with FakeOpenAIServer(["Hello there, sailor.", "Goodbye."]) as srv:
        env = {"OPENAI_BASE_URL": srv.base_url, "PONDER_MODEL": "openai:scripted",
               "PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/chat.db"}
        done = ponder("chat", str(spec), input="hi\nbye\n", env=env)
    assert done.returncode == 0, done.stderr
    assert "Hello there, sailor." in done.stdout and "Goodbye." in done.stdout
    assert all(request.get("stream") for request in srv.requests)
    listed = ponder("runs", "list", env=env)  # each turn was recorded
    assert listed.stdout.count("success") == 2, listed.stdout


def test_a_python_target(tmp_path):
    (tmp_path / "bot.py").write_text(textwrap.dedent("""
        from ponder import Agent
        from ponder.testing import ScriptedChatModel
        bot = Agent("bot", ScriptedChatModel(replies=["beep"]), checkpointer=False)
    """))
    done = ponder("run", f"{tmp_path}/bot.py:bot", "hello")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "beep"


@pytest.mark.parametrize("args, env, message", [
    (["--model", "nope:x"], {}, "unknown model provider 'nope'"),
    (["--model", "openai:gpt-4o-mini"], {}, "OPENAI_API_KEY is not set"),
    (["--model", "openai:m"], {"OPENAI_BASE_URL": "localhost:8000"}, "is malformed"),
    ([], {}, "PONDER_MODEL is not set"),
])
def test_configuration_mistakes_get_a_message_not_a_traceback(spec, args, env, message):
    done = ponder("run", str(spec), "hi", *args, env=env)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("target, message", [
    ("missing.yaml", "does not exist"),
    ("no_such_module:agent", "cannot import 'no_such_module'"),
    ("json:dumps", "is a function that takes arguments"),
    ("json", "does not name an object"),
])
def test_bad_targets_get_a_message_not_a_traceback(target, message):
    done = ponder("run", target, "hi")
    assert done.returncode == 2
    assert message in done.stderr or message in done.stdout
    assert "Traceback" not in done.stderr
