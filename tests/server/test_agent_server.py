"""The LangGraph Agent Server API, driven by the official langgraph-sdk client (async and sync)
against ponder's server, on SQLite and Postgres."""

import asyncio
import json
import os
import subprocess
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from langgraph_sdk import get_client, get_sync_client

from ponder.graphs.runs import RunRecorder
from ponder.graphs.scheduler import Scheduler
from ponder.graphs.targets import load_target
from ponder.server.app import create_app
from ponder.server.keys import KeyStore
from ponder.testing import BackgroundServer
from tests.helpers.cli import PONDER
from tests.helpers.graphs import AGENT_SERVER_GRAPHS as GRAPHS
from tests.helpers.serving import Served


def said(text):
    return {"messages": [{"role": "user", "content": text}]}


def texts(values):
    return [m["content"] for m in values["messages"]]


@pytest.fixture
def served(tmp_path, database_url):
    (tmp_path / "lg_graphs.py").write_text(GRAPHS)
    targets = [load_target(f"{tmp_path}/lg_graphs.py:{name}", database_url=database_url)
               for name in ("echo", "slow", "asker", "failing")]
    with BackgroundServer(create_app(targets, database_url=database_url)) as url:
        yield url


async def test_assistants(served):
    client = get_client(url=served, api_key=None)
    found = await client.assistants.search()
    assert sorted(a["graph_id"] for a in found) == ["asker", "echo", "failing", "slow"]
    echo = next(a for a in found if a["graph_id"] == "echo")
    assert echo["assistant_id"] == "046b5dc7-2108-582c-9c6c-31d556d138f0"  # as LangGraph's
    assert await client.assistants.get(echo["assistant_id"]) == echo
    graph = await client.assistants.get_graph("echo")
    assert {n["id"] for n in graph["nodes"]} == {"__start__", "echo", "__end__"}
    schemas = await client.assistants.get_schemas(echo["assistant_id"])
    assert "messages" in schemas["input_schema"]["properties"]
    with pytest.raises(httpx.HTTPStatusError) as missing:
        await client.assistants.get("nope")
    assert missing.value.response.status_code == 404 and "'nope'" in str(missing.value)


async def test_threads_lifecycle(served):
    client = get_client(url=served, api_key=None)
    thread = await client.threads.create(metadata={"user": "ann"})
    assert thread["status"] == "idle" and thread["metadata"] == {"user": "ann"}
    same = await client.threads.create(thread_id=thread["thread_id"], if_exists="do_nothing")
    assert same["thread_id"] == thread["thread_id"]
    with pytest.raises(httpx.HTTPStatusError, match="already exists"):
        await client.threads.create(thread_id=thread["thread_id"])
    updated = await client.threads.update(thread["thread_id"], metadata={"plan": "pro"})
    assert updated["metadata"] == {"user": "ann", "plan": "pro"}  # merged
    await client.threads.create(metadata={"user": "bob"})
    found = await client.threads.search(metadata={"user": "ann"})
    assert [t["thread_id"] for t in found] == [thread["thread_id"]]
    await client.runs.wait(thread["thread_id"], "echo", input=said("hi"))
    state = await client.threads.get_state(thread["thread_id"])
    assert texts(state["values"]) == ["hi", "turn 1: hi"] and state["next"] == []
    history = await client.threads.get_history(thread["thread_id"])
    assert len(history) >= 2 and history[0]["checkpoint"] == state["checkpoint"]
    await client.threads.update_state(thread["thread_id"], {"messages": [
        {"role": "user", "content": "noted"}]}, as_node="echo")
    assert texts((await client.threads.get_state(thread["thread_id"]))["values"])[-1] == "noted"
    await client.threads.delete(thread["thread_id"])
    with pytest.raises(httpx.HTTPStatusError) as gone:
        await client.threads.get(thread["thread_id"])
    assert gone.value.response.status_code == 404 and thread["thread_id"] in str(gone.value)


async def test_runs_wait_stream_list_and_join(served):
    client = get_client(url=served, api_key=None)
    thread = (await client.threads.create())["thread_id"]
    assert texts(await client.runs.wait(thread, "echo", input=said("hi")))[-1] == "turn 1: hi"
    parts = [p async for p in client.runs.stream(
        thread, "echo", input=said("again"),
        stream_mode=["values", "updates", "messages-tuple", "custom"])]
    events = [p.event for p in parts]
    assert events[0] == "metadata" and events[-1] == "values"
    assert {"updates", "messages", "custom"} <= set(events)
    assert next(p.data for p in parts if p.event == "custom") == {"echoing": "again"}
    message, metadata = next(p.data for p in parts if p.event == "messages")
    assert message["content"] == "turn 2: again" and metadata["langgraph_node"] == "echo"
    assert texts(parts[-1].data)[-1] == "turn 2: again"
    runs = await client.runs.list(thread)
    assert [r["status"] for r in runs] == ["success", "success"]
    run = await client.runs.get(thread, runs[0]["run_id"])
    assert run["run_id"] == parts[0].data["run_id"] and run["assistant_id"]
    assert texts(await client.runs.join(thread, run["run_id"]))[-1] == "turn 2: again"
    assert (await client.threads.get(thread))["status"] == "idle"


async def test_background_run_rejoined_with_replay(served):
    client = get_client(url=served, api_key=None)
    thread = (await client.threads.create())["thread_id"]
    run = await client.runs.create(thread, "slow", input=said("tea"),
                                   stream_mode=["values", "updates"])
    assert run["status"] == "pending"
    # Joining from the start replays what was already streamed, then goes on live.
    parts = [p async for p in client.runs.join_stream(thread, run["run_id"],
                                                      last_event_id="0")]
    assert [p.event for p in parts][:2] == ["metadata", "values"]
    assert "updates" in [p.event for p in parts]
    assert texts(parts[-1].data)[-1] == "slow: tea"
    assert (await client.runs.get(thread, run["run_id"]))["status"] == "success"


async def test_interrupts_are_answered_with_a_resume_command(served):
    client = get_client(url=served, api_key=None)
    thread = (await client.threads.create())["thread_id"]
    paused = await client.runs.wait(thread, "asker", input=said("tea please"))
    [question] = paused["__interrupt__"]
    assert question["value"] == "which tea?"
    waiting = await client.threads.get(thread)
    assert waiting["status"] == "interrupted"
    assert list(waiting["interrupts"].values())[0][0]["id"] == question["id"]
    done = await client.runs.wait(thread, "asker", command={"resume": "sencha"})
    assert texts(done)[-1] == "brewing sencha"
    assert (await client.threads.get(thread))["status"] == "idle"
    # A resume that answers nothing pending says so.
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await client.runs.wait(thread, "asker", command={"resume": {"nope": "x"}})
    assert refused.value.response.status_code == 400


async def test_a_copied_thread_has_the_state_history_and_interrupts_of_its_source(served):
    client = get_client(url=served, api_key=None)
    source = (await client.threads.create(metadata={"user": "ann"}))["thread_id"]
    await client.runs.wait(source, "asker", input=said("tea please"))
    copy = await client.threads.copy(source)
    assert copy["thread_id"] != source and copy["metadata"]["user"] == "ann"
    assert copy["status"] == "interrupted"
    state = await client.threads.get_state(copy["thread_id"])
    assert texts(state["values"]) == ["tea please"] and state["next"] == ["asker"]
    assert len(await client.threads.get_history(copy["thread_id"])) == len(
        await client.threads.get_history(source))
    # The copy goes its own way; the source is untouched.
    done = await client.runs.wait(copy["thread_id"], "asker", command={"resume": "sencha"})
    assert texts(done)[-1] == "brewing sencha"
    assert (await client.threads.get(source))["status"] == "interrupted"
    with pytest.raises(httpx.HTTPStatusError) as missing:
        await client.threads.copy("no-such-thread")
    assert missing.value.response.status_code == 404 and "no-such-thread" in str(missing.value)


async def test_multitask_strategies(served):
    client = get_client(url=served, api_key=None)
    thread = (await client.threads.create())["thread_id"]
    first = await client.runs.create(thread, "slow", input=said("one"))
    with pytest.raises(httpx.HTTPStatusError) as busy:
        await client.runs.create(thread, "slow", input=said("two"), multitask_strategy="reject")
    assert busy.value.response.status_code == 409
    assert busy.value.response.json()["error"]["code"] == "thread_busy"
    queued = await client.runs.create(thread, "slow", input=said("three"))
    await client.runs.join(thread, queued["run_id"])
    state = (await client.threads.get_state(thread))["values"]
    assert texts(state) == ["one", "slow: one", "three", "slow: three"]  # in arrival order
    # interrupt: the running run stops (its input kept), the new one runs.
    running = await client.runs.create(thread, "slow", input=said("four"))
    await asyncio.sleep(0.5)
    await client.runs.wait(thread, "echo", input=said("five"), multitask_strategy="interrupt")
    assert (await client.runs.get(thread, running["run_id"]))["status"] == "interrupted"
    assert texts((await client.threads.get_state(thread))["values"])[-3:] == [
        "four", "five", "turn 4: five"]
    assert (await client.runs.get(thread, first["run_id"]))["status"] == "success"


async def test_cancel_and_errors(served):
    client = get_client(url=served, api_key=None)
    thread = (await client.threads.create())["thread_id"]
    run = await client.runs.create(thread, "slow", input=said("long"))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await client.runs.cancel(thread, run["run_id"], wait=True)
    assert time.monotonic() - started < 10
    assert (await client.runs.get(thread, run["run_id"]))["status"] == "interrupted"
    failed = await client.runs.wait(thread, "failing", input=said("x"), raise_error=False)
    assert failed["__error__"] == {"error": "ValueError", "message": "the kettle is broken"}
    assert (await client.threads.get(thread))["status"] == "error"
    streamed = [p async for p in client.runs.stream(thread, "failing", input=said("y"))]
    assert streamed[-1].event == "error"


async def test_stateless_runs_leave_no_thread(served):
    client = get_client(url=served, api_key=None)
    out = await client.runs.wait(None, "echo", input=said("once"))
    assert texts(out) == ["once", "turn 1: once"]
    parts = [p async for p in client.runs.stream(None, "echo", input=said("twice"))]
    assert texts(parts[-1].data) == ["twice", "turn 1: twice"]
    assert await client.threads.search() == []


def test_the_sync_client(served):
    client = get_sync_client(url=served, api_key=None)
    thread = client.threads.create()["thread_id"]
    assert texts(client.runs.wait(thread, "echo", input=said("sync")))[-1] == "turn 1: sync"
    events = [p.event for p in client.runs.stream(thread, "echo", input=said("again"))]
    assert events[0] == "metadata" and "values" in events


@pytest.mark.parametrize("body,field", [
    ({"assistant_id": "echo", "command": "resume please"}, "command"),
    ({"assistant_id": "echo", "input": said("x"), "stream_mode": "telepathy"}, "stream_mode"),
    ({"assistant_id": "echo", "multitask_strategy": "shout"}, "multitask_strategy"),
    ({"input": said("x")}, "assistant_id"),
])
def test_bad_runs_are_refused_with_what_to_fix(served, body, field):
    thread = httpx.post(f"{served}/threads", json={}).json()["thread_id"]
    answer = httpx.post(f"{served}/threads/{thread}/runs", json=body)
    assert 400 <= answer.status_code < 500 and field in answer.json()["detail"]
    assert httpx.get(f"{served}/threads/{thread}/runs").json() == []  # nothing half-written
    missing = httpx.post(f"{served}/threads/no-such-thread/runs/wait",
                         json={"assistant_id": "echo", "input": said("x")})
    assert missing.status_code == 404 and "no-such-thread" in missing.json()["detail"]


async def test_threads_belong_to_their_key(tmp_path):
    (tmp_path / "lg_graphs.py").write_text(GRAPHS)
    db = f"sqlite:///{tmp_path}/keys.db"
    async with KeyStore(db) as keys:
        (_, one), (_, two) = await keys.create("one"), await keys.create("two")
    target = load_target(f"{tmp_path}/lg_graphs.py:echo", database_url=db)
    async with BackgroundServer(create_app([target], database_url=db)) as url:
        mine, theirs = get_client(url=url, api_key=one), get_client(url=url, api_key=two)
        thread = (await mine.threads.create())["thread_id"]
        await mine.runs.wait(thread, "echo", input=said("secret"))
        with pytest.raises(httpx.HTTPStatusError) as hidden:
            await theirs.threads.get_state(thread)
        assert hidden.value.response.status_code == 404
        assert await theirs.threads.search() == []
        with pytest.raises(httpx.HTTPStatusError) as refused:
            await get_client(url=url, api_key="wrong").threads.search()
        assert refused.value.response.status_code == 401


async def test_a_run_started_through_one_process_is_seen_and_cancelled_through_another(
        tmp_path, database_url):
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir(), second_dir.mkdir()
    with Served(first_dir, database_url, GRAPHS, "slow", "echo", workers=1) as a, \
            Served(second_dir, database_url, GRAPHS, "slow", "echo", workers=1) as b:
        one, two = get_client(url=a.url, api_key=None), get_client(url=b.url, api_key=None)
        thread = (await one.threads.create())["thread_id"]
        assert (await two.threads.get(thread))["thread_id"] == thread
        run = await one.runs.create(thread, "slow", input=said("long"))
        for _ in range(100):  # the other process sees it start
            if (await two.runs.get(thread, run["run_id"]))["status"] == "running":
                break
            await asyncio.sleep(0.1)
        assert (await two.threads.get(thread))["status"] == "busy"
        assert [r["run_id"] for r in await two.runs.list(thread)] == [run["run_id"]]
        await two.runs.cancel(thread, run["run_id"], wait=True)
        assert (await one.runs.get(thread, run["run_id"]))["status"] == "interrupted"
        # Joined through the other process: a resumable run's events replayed and followed
        # there; any other run's events too on Postgres (every run's are stored and
        # announced), and its final values once it has ended on SQLite.
        resumable = await one.runs.create(thread, "slow", input=said("stored"),
                                          stream_mode=["values", "updates"],
                                          stream_resumable=True)
        parts = [p async for p in two.runs.join_stream(thread, resumable["run_id"],
                                                       last_event_id="0")]
        assert [p.event for p in parts][:2] == ["metadata", "values"]
        assert "updates" in [p.event for p in parts]
        assert texts(parts[-1].data)[-1] == "slow: stored"
        plain = await one.runs.create(thread, "slow", input=said("plain"))
        parts = [p async for p in two.runs.join_stream(thread, plain["run_id"],
                                                       last_event_id="0")]
        if database_url.startswith("postgres"):
            assert [p.event for p in parts] == ["metadata", "values", "values"]
        else:
            assert [p.event for p in parts] == ["values"]
        assert texts(parts[-1].data)[-1] == "slow: plain"
        # Turns of one thread go one at a time across both processes, in arrival order.
        queued = [await client.runs.create(thread, "echo", input=said(f"q{i}"))
                  for i, client in enumerate([one, two, one])]
        joined = await two.runs.join(thread, queued[-1]["run_id"])
        assert texts(joined)[-6:] == ["q0", "turn 4: q0", "q1", "turn 5: q1", "q2",
                                      "turn 6: q2"]


async def test_webhooks_are_signed_and_retried(served, monkeypatch):
    from starlette.applications import Starlette
    from starlette.responses import Response as StarletteResponse
    from starlette.routing import Route

    from ponder.server.agent_server.webhooks import signature

    monkeypatch.setenv("PONDER_WEBHOOK_SECRET", "s3cret")
    received = []

    async def hook(request):
        received.append((dict(request.headers), await request.body()))
        return StarletteResponse(status_code=503 if len(received) == 1 else 200)

    client = get_client(url=served, api_key=None)
    async with BackgroundServer(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as at:
        thread = (await client.threads.create())["thread_id"]
        run = await client.runs.create(thread, "echo", input=said("ping"),
                                       webhook=f"{at}/hook")
        for _ in range(100):
            if len(received) == 2:
                break
            await asyncio.sleep(0.1)
    assert len(received) == 2  # the 503 was retried
    headers, body = received[-1]
    assert headers["x-ponder-signature"] == signature(body, "s3cret")
    sent = json.loads(body)
    assert sent["run_id"] == run["run_id"] and sent["status"] == "success"
    assert texts(sent["values"])[-1] == "turn 1: ping"


@pytest.mark.parametrize("webhook,secret,problem", [
    ("ftp://example.com/hook", "s3cret", "not an http(s) URL"),
    ("hooks/runs", "s3cret", "not an http(s) URL"),
    ("https://example.com/hook", None, "PONDER_WEBHOOK_SECRET is not set"),
])
def test_bad_webhooks_are_refused(served, monkeypatch, webhook, secret, problem):
    if secret:
        monkeypatch.setenv("PONDER_WEBHOOK_SECRET", secret)
    else:
        monkeypatch.delenv("PONDER_WEBHOOK_SECRET", raising=False)
    thread = httpx.post(f"{served}/threads", json={}).json()["thread_id"]
    answer = httpx.post(f"{served}/threads/{thread}/runs", json={
        "assistant_id": "echo", "input": said("x"), "webhook": webhook})
    assert answer.status_code == 422 and problem in answer.json()["detail"]
    assert httpx.get(f"{served}/threads/{thread}/runs").json() == []



@pytest.fixture
def served_by_reference(tmp_path, database_url):
    """The graphs served by TARGET strings, with an embedded worker for schedules."""
    (tmp_path / "lg_graphs.py").write_text(GRAPHS)
    refs = [f"{tmp_path}/lg_graphs.py:{name}" for name in ("echo", "slow")]
    with BackgroundServer(create_app(refs, database_url=database_url,
                                     run_schedules=True)) as url:
        yield url, database_url


async def test_crons_through_the_api(served_by_reference):
    url, db = served_by_reference
    client = get_client(url=url, api_key=None)
    thread = (await client.threads.create())["thread_id"]
    cron = await client.crons.create_for_thread(thread, "echo", schedule="*/5 * * * *",
                                                input=said("daily report"),
                                                timezone="Europe/Berlin")
    assert cron["thread_id"] == thread and cron["enabled"] and cron["timezone"] == "Europe/Berlin"
    assert datetime.fromisoformat(cron["next_run_date"]).minute % 5 == 0
    stateless = await client.crons.create("echo", schedule="0 9 * * 1", input=said("weekly"))
    assert stateless["thread_id"] is None
    assert [c["cron_id"] for c in await client.crons.search(thread_id=thread)] == [
        cron["cron_id"]]
    assert await client.crons.count(assistant_id="echo") == 2
    moved = await client.crons.update(cron["cron_id"], schedule="30 8 * * *", enabled=False)
    assert not moved["enabled"] and moved["schedule"] == "30 8 * * *"
    at = datetime.fromisoformat(moved["next_run_date"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert (at.hour, at.minute) == (8, 30)  # in the cron's own time zone
    # A fire runs on the cron's thread, through the embedded worker.
    scheduler = Scheduler(db)
    try:
        await scheduler.run_now(cron["cron_id"])
    finally:
        await scheduler.aclose()
    for _ in range(300):  # generous: a busy machine
        values = (await client.threads.get_state(thread))["values"]
        if values and texts(values)[-1:] == ["turn 1: daily report"]:
            break
        await asyncio.sleep(0.1)
    assert texts(values) == ["daily report", "turn 1: daily report"]
    await client.crons.delete(cron["cron_id"])
    assert await client.crons.search(thread_id=thread) == []
    async with httpx.AsyncClient() as http:
        missing = await http.get(f"{url}/runs/crons/{cron['cron_id']}")
    assert missing.status_code == 404 and cron["cron_id"] in missing.json()["detail"]


@pytest.mark.parametrize("body,status,problem", [
    ({"assistant_id": "echo", "schedule": "nope"}, 422, "Invalid cron schedule 'nope'"),
    ({"assistant_id": "echo", "schedule": "* * * * *", "timezone": "Mars/Base"}, 422,
     "Mars/Base"),
    ({"assistant_id": "tea", "schedule": "* * * * *"}, 404, "'tea' not found"),
    ({"schedule": "* * * * *"}, 400, "assistant_id"),
])
def test_bad_crons_are_refused(served_by_reference, body, status, problem):
    url, _ = served_by_reference
    answer = httpx.post(f"{url}/runs/crons", json=body)
    assert answer.status_code == status and problem in answer.json()["detail"]
    assert httpx.post(f"{url}/runs/crons/search", json={}).json() == []  # nothing written


def test_crons_need_targets_served_by_reference(served):
    answer = httpx.post(f"{served}/runs/crons", json={"assistant_id": "echo",
                                                      "schedule": "* * * * *"})
    assert answer.status_code == 422 and "TARGET string" in answer.json()["detail"]


async def test_the_store(served):
    client = get_client(url=served, api_key=None)
    await client.store.put_item(["users", "ann"], "prefs", {"tea": "sencha"})
    await client.store.put_item(["users", "bob"], "prefs", {"tea": "matcha"})
    item = await client.store.get_item(["users", "ann"], "prefs")
    assert (item["namespace"], item["key"], item["value"]) == (["users", "ann"], "prefs",
                                                               {"tea": "sencha"})
    found = await client.store.search_items(["users"], filter={"tea": "matcha"})
    assert [i["namespace"] for i in found["items"]] == [["users", "bob"]]
    namespaces = await client.store.list_namespaces(prefix=["users"])
    assert sorted(namespaces["namespaces"]) == [["users", "ann"], ["users", "bob"]]
    await client.store.delete_item(["users", "ann"], "prefs")
    assert await client.store.get_item(["users", "ann"], "prefs") is None
    async with httpx.AsyncClient() as http:
        bad = await http.put(f"{served}/store/items", json={
            "namespace": ["a.b"], "key": "k", "value": {}})
    assert bad.status_code == 422 and "without periods" in bad.json()["detail"]


async def test_each_key_has_a_store_of_its_own(tmp_path):
    db = f"sqlite:///{tmp_path}/store.db"
    async with KeyStore(db) as keys:
        (_, one), (_, two) = await keys.create("one"), await keys.create("two")
    (tmp_path / "lg_graphs.py").write_text(GRAPHS)
    target = load_target(f"{tmp_path}/lg_graphs.py:echo", database_url=db)
    async with BackgroundServer(create_app([target], database_url=db)) as url:
        mine, theirs = get_client(url=url, api_key=one), get_client(url=url, api_key=two)
        await mine.store.put_item(["notes"], "n1", {"text": "secret"})
        assert (await mine.store.get_item(["notes"], "n1"))["namespace"] == ["notes"]
        assert await theirs.store.get_item(["notes"], "n1") is None
        assert (await theirs.store.search_items([]))["items"] == []
        assert (await mine.store.list_namespaces())["namespaces"] == [["notes"]]


async def test_rollback_discards_the_running_run(served):
    client = get_client(url=served, api_key=None)
    thread = (await client.threads.create())["thread_id"]
    await client.runs.wait(thread, "echo", input=said("kept"))
    doomed = await client.runs.create(thread, "slow", input=said("doomed"))
    await asyncio.sleep(0.5)  # it has saved its input by now
    after = await client.runs.wait(thread, "echo", input=said("instead"),
                                   multitask_strategy="rollback")
    assert texts(after) == ["kept", "turn 1: kept", "instead", "turn 2: instead"]
    with pytest.raises(httpx.HTTPStatusError) as gone:
        await client.runs.get(thread, doomed["run_id"])
    assert gone.value.response.status_code == 404
    history = await client.threads.get_history(thread, limit=100)
    assert not any("doomed" in str(h["values"]) for h in history)  # no trace left
    # Cancelling with action=rollback does the same.
    second = await client.runs.create(thread, "slow", input=said("also doomed"))
    await asyncio.sleep(0.5)
    await client.runs.cancel(thread, second["run_id"], wait=True, action="rollback")
    assert texts((await client.threads.get_state(thread))["values"])[-1] == "turn 2: instead"


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
async def test_runs_of_a_server_that_dies_are_finished_by_another(tmp_path, database_url,
                                                                  signal_name):
    """Two server processes on one database; one dies (kill -9, or stops) while its runs are
    going: the other takes each over from its last checkpoint, and each can be joined there."""
    import signal

    env = {"PONDER_RUN_STALE_S": "2"}
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with Served(tmp_path / "a", database_url, GRAPHS, "slow", workers=1, **env) as doomed, \
            Served(tmp_path / "b", database_url, GRAPHS, "slow", workers=1, **env) as other:
        client = get_client(url=doomed.url, api_key=None)
        started = []
        for i in range(5):
            thread = (await client.threads.create())["thread_id"]
            started.append((thread, await client.runs.create(thread, "slow",
                                                              input=said(f"job {i}"))))
        await asyncio.sleep(0.5)
        doomed.process.send_signal(getattr(signal, signal_name))
        doomed.process.wait(timeout=30)
        survivor = get_client(url=other.url, api_key=None)
        for i, (thread, run) in enumerate(started):
            joined = await asyncio.wait_for(survivor.runs.join(thread, run["run_id"]), 60)
            assert texts(joined) == [f"job {i}", f"slow: job {i}"]
            assert (await survivor.runs.get(thread, run["run_id"]))["status"] == "success"


@pytest.mark.parametrize("path,body,problem", [
    ("/store/items/search", {"filter": {"a": {"$like": 1}}}, "filter operator '$like'"),
    ("/store/items/search", {"filter": {"a": [1, 2]}}, "must be a string, number"),
    ("/store/items/search", {"filter": {"": 1}}, "is not a field name"),
    ("/store/items/search", {"namespace_prefix": ["a.b"]}, "without periods"),
    ("/store/namespaces", {"prefix": [""]}, "without periods"),
])
def test_bad_store_requests_say_what_to_fix(served, path, body, problem):
    answer = httpx.post(f"{served}{path}", json=body)
    assert answer.status_code == 422 and problem in answer.json()["detail"]


async def test_each_multitask_strategy_across_two_processes(tmp_path, database_url):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with Served(tmp_path / "a", database_url, GRAPHS, "slow", "echo", workers=1) as a, \
            Served(tmp_path / "b", database_url, GRAPHS, "slow", "echo", workers=1) as b:
        one, two = get_client(url=a.url, api_key=None), get_client(url=b.url, api_key=None)

        async def busy_thread() -> tuple[str, dict]:
            thread = (await one.threads.create())["thread_id"]
            running = await one.runs.create(thread, "slow", input=said("first"))
            for _ in range(100):
                if (await two.runs.get(thread, running["run_id"]))["status"] == "running":
                    return thread, running
                await asyncio.sleep(0.05)
            raise AssertionError("the first run did not start")

        thread, running = await busy_thread()
        with pytest.raises(httpx.HTTPStatusError) as refused:
            await two.runs.create(thread, "echo", input=said("no"), multitask_strategy="reject")
        assert refused.value.response.status_code == 409
        queued = await two.runs.wait(thread, "echo", input=said("after"))
        assert texts(queued) == ["first", "slow: first", "after", "turn 2: after"]

        thread, running = await busy_thread()
        now = await two.runs.wait(thread, "echo", input=said("now"),
                                  multitask_strategy="interrupt")
        assert texts(now) == ["first", "now", "turn 2: now"]  # the first's input is kept
        assert (await one.runs.get(thread, running["run_id"]))["status"] == "interrupted"

        thread, running = await busy_thread()
        instead = await two.runs.wait(thread, "echo", input=said("instead"),
                                      multitask_strategy="rollback")
        assert texts(instead) == ["instead", "turn 1: instead"]  # no trace of the first
        with pytest.raises(httpx.HTTPStatusError) as gone:
            await one.runs.get(thread, running["run_id"])
        assert gone.value.response.status_code == 404


def _queue_worker(folder, url: str) -> subprocess.Popen:
    """``ponder worker --queue`` on ``url``, in a process of its own."""
    return subprocess.Popen([*PONDER, "worker", "--queue", "--concurrency", "2"], cwd=folder,
                            env={**os.environ, "PONDER_DATABASE_URL": url},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


async def test_background_runs_and_cron_fires_go_through_the_queue_to_a_queue_worker(
        tmp_path, postgres_url):
    with Served(tmp_path, postgres_url, GRAPHS, "echo", "asker", workers=1,
                options=("--queue",)) as served:
        worker = _queue_worker(tmp_path, postgres_url)
        try:
            client = get_client(url=served.url, api_key=None)
            thread = (await client.threads.create())["thread_id"]
            runs = [await client.runs.create(thread, "echo", input=said(f"job {i}"))
                    for i in range(3)]
            assert {r["status"] for r in runs} <= {"pending", "running", "success"}
            joined = await asyncio.wait_for(client.runs.join(thread, runs[-1]["run_id"]), 120)
            assert texts(joined) == ["job 0", "turn 1: job 0", "job 1", "turn 2: job 1",
                                     "job 2", "turn 3: job 2"]  # in order, one at a time
            shown = await client.runs.get(thread, runs[0]["run_id"])
            echo = await client.assistants.get("echo")
            assert shown["status"] == "success" and shown["assistant_id"] == echo["assistant_id"]
            # A resume runs where its interrupt is known: here, not on the queue.
            await client.runs.wait(thread, "asker", input=said("tea"))
            done = await client.runs.wait(thread, "asker", command={"resume": "oolong"})
            assert texts(done)[-1] == "brewing oolong"
            # A cron's fire is queued and run by the queue worker as well.
            cron = await client.crons.create_for_thread(thread, "echo", schedule="0 9 * * *",
                                                        input=said("report"))
            scheduler = Scheduler(postgres_url)
            try:
                fired = await scheduler.run_now(cron["cron_id"])
            finally:
                await scheduler.aclose()
            async with RunRecorder(postgres_url) as records:
                ended = await asyncio.wait_for(records.wait(fired.run_id), 120)
                queued = await records.record(runs[0]["run_id"])
            assert ended.status == "success"
            assert texts((await client.threads.get_state(thread))["values"])[-1] == (
                "turn 5: report")
            # Executed by the worker process, not the server.
            assert queued.worker.split(":")[1] == str(worker.pid)
            assert ended.worker.split(":")[1] == str(worker.pid)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
