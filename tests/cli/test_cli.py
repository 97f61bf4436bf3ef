"""The `ponder` command: real processes, as a user runs them."""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from ponder.testing import FakeOpenAIServer, Fault, tool_calls
from tests.helpers.cli import PONDER, ponder


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


# -- optional extras -------------------------------------------------------------------------

# Installed as sitecustomize in the child process: the modules named in BLOCK_MODULES (and
# their submodules) cannot be imported, as if their extra had not been installed.
BLOCKER = textwrap.dedent("""
    import os, sys
    from importlib.abc import MetaPathFinder

    BLOCKED = [n for n in os.environ["BLOCK_MODULES"].split(",") if n]

    class Blocker(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
""")
UNREACHABLE_PG = "postgresql://nobody@127.0.0.1:1/none"  # the import fails before any connection


def without(modules, *args, tmp_path, env=None):
    """``ponder *args`` in a process where ``modules`` are not installed."""
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join(p for p in (str(blocker), os.environ.get("PYTHONPATH")) if p)
    return ponder(*args, env={"PYTHONPATH": path, "BLOCK_MODULES": ",".join(modules),
                              **(env or {})}, cwd=tmp_path)


def assert_names_the_extra(done, module, extra):
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {module} is not installed; it comes with ponder's {extra} extra: "
        f"pip install 'ponder[{extra}]'"]


@pytest.mark.parametrize("modules, args, database, module, extra", [
    (["fastapi"], ["serve", "agent.yaml"], None, "fastapi", "server"),
    (["sse_starlette"], ["serve", "agent.yaml"], None, "sse_starlette", "server"),
    (["psycopg"], ["runs", "list"], UNREACHABLE_PG, "psycopg", "postgres"),
    (["psycopg"], ["schedule", "list"], UNREACHABLE_PG, "psycopg", "postgres"),
    (["psycopg_pool"], ["kb", "stats"], UNREACHABLE_PG, "psycopg_pool", "postgres"),
    (["psycopg_pool"], ["memory", "list", "--user", "u", "--embeddings", "openai:e"],
     UNREACHABLE_PG, "psycopg_pool", "postgres"),
], ids=["serve-fastapi", "serve-sse", "runs", "schedules", "kb", "memory"])
def test_a_missing_extra_is_named_in_one_line(tmp_path, modules, args, database, module, extra):
    # The target would not load either: the missing extra must be what is reported first.
    with FakeOpenAIServer() as srv:  # long-term memory embeds before it opens its database
        env = {"OPENAI_BASE_URL": srv.base_url}
        if database:
            env["PONDER_DATABASE_URL"] = database
        done = without(modules, *args, tmp_path=tmp_path, env=env)
    assert_names_the_extra(done, module, extra)


def test_missing_extras_on_postgres_and_for_local_embeddings(tmp_path, postgres_url):
    env = {"PONDER_DATABASE_URL": postgres_url}
    (tmp_path / "notes.md").write_text("# Kettles\n\nKettles carry a two year warranty.\n")
    assert ponder("kb", "add", str(tmp_path / "notes.md"), env=env).returncode == 0
    # Word ranking on Postgres is BM25 in memory.
    for module in ("bm25s", "Stemmer", "numpy"):
        done = without([module], "kb", "search", "warranty", "--mode", "sparse",
                       tmp_path=tmp_path, env=env)
        assert_names_the_extra(done, module, "postgres")
    (tmp_path / "bot.yaml").write_text("name: bot\nprofile: {role: a helper}\n")
    # Said by the code that needs them, in its own words: still one line, exit code 2.
    for modules, args, words in [
        (["procrastinate"], ["worker", "--queue"], "pip install 'ponder[postgres]'"),
        (["langgraph.checkpoint.postgres"], ["run", "bot.yaml", "hi", "--model", "openai:m"],
         "pip install 'ponder[postgres]'"),
        (["sentence_transformers"], ["kb", "search", "warranty", "--embeddings", "local"],
         "pip install 'ponder[local]'"),
        (["torch"], ["kb", "search", "warranty", "--embeddings", "local"],
         "pip install 'ponder[local]'"),
    ]:
        done = without(modules, *args, tmp_path=tmp_path,
                       env={**env, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], done.stderr


def test_a_target_that_needs_a_missing_extra_names_it(tmp_path):
    (tmp_path / "app.py").write_text("from ponder.server import create_app\nbot = None\n")
    hint = "fastapi is not installed; it comes with ponder's server extra: pip install " \
           "'ponder[server]'"
    for ref, line in [("app.py:bot", f"error: cannot load 'app.py:bot': {hint}"),  # a file
                      ("app:bot", f"error: 'app:bot': cannot import 'app' ({hint})")]:  # a module
        done = without(["fastapi"], "run", ref, "hi", tmp_path=tmp_path)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [line]


def test_the_extras_table_follows_pyproject():
    """Every distribution of an optional extra provides a module the CLI maps to that extra."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, files

    from packaging.requirements import Requirement

    from ponder.config import EXTRA_MODULES

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    core = {Requirement(r).name.lower() for r in project["dependencies"]}
    extras = {name: reqs for name, reqs in project["optional-dependencies"].items()
              if name not in ("all", "dev")}
    assert set(EXTRA_MODULES.values()) == set(extras)
    for extra, requirements in extras.items():
        mapped = {m for m, e in EXTRA_MODULES.items() if e == extra}
        for requirement in map(Requirement, requirements):
            if requirement.name.lower() in core:
                continue  # uvicorn: installed anyway; the extra only adds its speed-ups
            try:
                paths = files(requirement.name) or []
            except PackageNotFoundError:
                pytest.fail(f"{requirement.name} is not installed: install ponder[dev]")
            modules = {".".join(p.parent.parts) for p in paths if p.name == "__init__.py"}
            modules |= {p.name.split(".")[0] for p in paths
                        if len(p.parts) == 1 and p.suffix in (".py", ".so", ".pyd")}
            assert mapped & modules, f"{requirement.name} ({extra}) is missing from EXTRA_MODULES"


# -- serving graphs --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_a_graph_with_a_typing_typeddict_state(tmp_path):
    from tests.helpers.graphs import TYPED_DICT_GRAPH

    (tmp_path / "graph.py").write_text(TYPED_DICT_GRAPH)
    env = {**os.environ, "PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/serve.db"}
    port = _free_port()
    server = subprocess.Popen([*PONDER, "serve", "graph.py:graph", "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().startswith("serving typed-graph on"), server.stderr.read()
        reply = None
        for _ in range(100):  # the line is printed just before uvicorn binds the port
            try:
                reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                                   json={"model": "typed-graph",
                                         "messages": [{"role": "user", "content": "hi"}]})
                break
            except httpx.ConnectError:
                time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert reply is not None and reply.status_code == 200, reply and reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "typed turn 1"

    refused = ponder("serve", "graph.py:no_messages", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: the graph 'counter' takes no 'messages' in its input, so it cannot chat: give "
        "its state (and input schema, if it has one) a messages key, e.g. "
        "StateGraph(MessagesState) or messages: Annotated[list, add_messages]"]


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


def test_a_failed_run_exits_instead_of_hanging(tmp_path):
    (tmp_path / "bot.py").write_text(textwrap.dedent("""
        from ponder import Agent
        bot = Agent("bot", "openai:scripted")
    """))
    with FakeOpenAIServer([], faults=[Fault.server_error(500)] * 5) as srv:
        env = {**os.environ, "OPENAI_BASE_URL": srv.base_url, "PONDER_MAX_ATTEMPTS": "1",
               "PONDER_DATABASE_URL": f"sqlite:///{tmp_path}/bot.db"}
        done = subprocess.run([sys.executable, "-m", "ponder.cli", "run", f"{tmp_path}/bot.py:bot",
                               "hi"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and "failed after 1 attempt" in done.stderr
