"""The `ponder` command: real processes, as a user runs them."""

import json
import os
import re
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


OFFICE = '''
from pathlib import Path

from langchain_core.tools import tool
from langgraph.types import interrupt

from ponder import Agent
from ponder.testing import ScriptedChatModel, tool_calls


@tool
def send_email(to: str) -> str:
    """Send an email."""
    with Path(__file__).with_name("sent.log").open("a") as log:  # each run of the tool
        log.write(to + "\\n")
    return f"sent to {to}"


@tool
def approve(action: str) -> str:
    """Do an action once a human approves it."""
    answer = interrupt(f"{action}?")
    return f"{action}: done" if answer == "yes" else f"{action}: held ({answer})"


def reply(messages):
    # Stateless, so that each process (each ponder run) gets the same script.
    if messages[-1].type == "tool":
        return "Done: " + "; ".join(m.content for m in messages if m.type == "tool")
    return tool_calls(("approve", {"action": "delete acme"}), ("send_email", {"to": "ann"}),
                      ("approve", {"action": "refund 500"}))


office = Agent("office", ScriptedChatModel(replies=reply), tools=[send_email, approve])
'''
QUESTION = r"\d\. (delete acme|refund 500)\? \(id ([0-9a-f]{32})\)"


@pytest.fixture
def office(tmp_path) -> tuple[str, dict[str, str]]:
    (tmp_path / "office.py").write_text(OFFICE)
    return f"{tmp_path}/office.py:office", {"PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/o.db"}


def test_chat_shows_every_interrupt_with_its_id_and_asks_for_each_answer(office, tmp_path):
    target, env = office
    done = ponder("chat", target, input="clean up\nyes\nno\n", env=env)
    assert done.returncode == 0, done.stderr
    # Both questions, in the order of the calls, each with its id, before the answers.
    questions = re.findall(QUESTION, done.stdout)
    assert [q for q, _ in questions] == ["delete acme", "refund 500"]
    assert len({id for _, id in questions}) == 2
    assert done.stdout.index("refund 500?") < done.stdout.index("answer 1 ›")
    # Each answer reached its own call; the email that finished before them was sent once.
    assert "Done: delete acme: done; sent to ann; refund 500: held (no)" in done.stdout
    assert (tmp_path / "sent.log").read_text() == "ann\n"
    assert ponder("runs", "list", env={**env, "COLUMNS": "200"}).stdout.count("success") == 1


def test_chat_input_that_ends_before_the_answers_leaves_them_pending(office, tmp_path):
    target, env = office
    done = ponder("chat", target, "--thread", "t", input="clean up\nyes\n", env=env)
    assert done.returncode == 0, done.stderr
    assert "Done:" not in done.stdout  # one answer of two: nothing was resumed
    listed = ponder("runs", "list", env={**env, "COLUMNS": "200"}).stdout
    assert listed.count("interrupted") == 1
    # Both questions still wait, under the ids shown, and --resume answers them later.
    ids = {q: id for q, id in re.findall(QUESTION, done.stdout)}
    answers = json.dumps({ids["refund 500"]: "no", ids["delete acme"]: "yes"})
    resumed = ponder("run", target, "--thread", "t", "--resume", answers, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "Done: delete acme: done; sent to ann; refund 500: held (no)"
    assert (tmp_path / "sent.log").read_text() == "ann\n"


def test_run_asks_for_each_answer_and_resume_answers_by_id(office, tmp_path):
    target, env = office
    asked = ponder("run", target, "clean up", input="no\nyes\n", env=env)
    assert asked.returncode == 0, asked.stderr
    assert [q for q, _ in re.findall(QUESTION, asked.stdout)] == ["delete acme", "refund 500"]
    assert asked.stdout.strip().endswith(
        "Done: delete acme: held (no); sent to ann; refund 500: done")

    paused = ponder("run", target, "clean up", "--thread", "t", "--json", env=env)
    result = json.loads(paused.stdout)
    assert [i["value"] for i in result["interrupts"]] == ["delete acme?", "refund 500?"]
    ids = {i["value"]: i["id"] for i in result["interrupts"]}
    ambiguous = ponder("run", target, "--thread", "t", "--resume", "yes", env=env)
    assert ambiguous.returncode == 2 and "2 interrupts are pending" in ambiguous.stderr
    assert all(id in ambiguous.stderr for id in ids.values())
    assert "Traceback" not in ambiguous.stderr
    answers = json.dumps({ids["refund 500?"]: "no", ids["delete acme?"]: "yes"})
    resumed = ponder("run", target, "--thread", "t", "--resume", answers, "--json", env=env)
    assert json.loads(resumed.stdout)["output"] == (
        "Done: delete acme: done; sent to ann; refund 500: held (no)")
    assert json.loads(resumed.stdout)["interrupts"] == []
    assert (tmp_path / "sent.log").read_text() == "ann\nann\n"  # once per thread


@pytest.mark.parametrize("args, message", [
    ([], "pass a message to send, or --resume"),
    (["hi", "--thread", "t", "--resume", "yes"], "pass a message or --resume, not both"),
    (["--resume", "yes"], "--resume answers the interrupts of a thread: pass --thread"),
])
def test_run_needs_a_message_or_answers(office, args, message):
    target, env = office
    done = ponder("run", target, *args, env=env)
    assert done.returncode == 2 and message in done.stderr
    assert "Traceback" not in done.stderr
