"""The threads and runs API over real HTTP: ownership, streaming events, interrupts (several at
once, answered by id), cancel, and the policy for two runs on one thread."""

import asyncio
import json

import httpx
import pytest
from langchain_core.tools import tool
from langgraph.types import interrupt

from ponder import Agent
from ponder.server import create_app
from ponder.server.keys import KeyStore
from ponder.testing import BackgroundServer, ScriptedChatModel, tool_calls


@tool
def launch(target: str) -> str:
    """Launch a probe, after a human approves."""
    return f"launched to {target}" if interrupt(f"launch to {target}?") == "yes" else "held"


def mission_model(latency=0.0):
    def reply(messages):
        last = messages[-1]
        if last.type == "tool":
            return f"Done: {last.content}."
        if "launch" in last.content:
            return tool_calls(("launch", {"target": "mars"}))
        return f"you said {last.content}"
    return ScriptedChatModel(replies=reply, latency=latency, tokens_per_second=1000)


def app_for(tmp_path, latency=0.0, **options):
    db = f"sqlite:///{tmp_path}/threads.db"
    agent = Agent("mission", mission_model(latency), tools=[launch], checkpointer=db)
    return create_app([agent], database_url=db, **options), db


async def events_of(response) -> list[tuple[str, dict]]:
    found, kind = [], None
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            found.append((kind, json.loads(line.split(":", 1)[1])))
    return found


async def test_threads_runs_and_state(tmp_path):
    app, _ = app_for(tmp_path)
    async with BackgroundServer(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        thread = (await http.post("/v1/threads", json={"agent": "mission",
                                                        "title": "chat"})).json()
        run = (await http.post(f"/v1/threads/{thread['id']}/runs",
                               json={"input": "hello"})).json()
        assert run["status"] == "success" and run["output"] == "you said hello"
        state = (await http.get(f"/v1/threads/{thread['id']}")).json()
        assert [m["content"] for m in state["messages"]] == ["hello", "you said hello"]
        listed = (await http.get("/v1/threads")).json()["data"]
        assert [t["id"] for t in listed] == [thread["id"]]
        history = (await http.get(f"/v1/threads/{thread['id']}/history")).json()["data"]
        assert len(history) >= 2 and history[0]["messages"] == 2
        runs = (await http.get(f"/v1/threads/{thread['id']}/runs")).json()["data"]
        assert [r["id"] for r in runs] == [run["id"]]
        assert (await http.delete(f"/v1/threads/{thread['id']}")).json()["deleted"]
        assert (await http.get(f"/v1/threads/{thread['id']}")).status_code == 404
        unknown = await http.post("/v1/threads", json={"agent": "nobody"})
        assert unknown.status_code == 404 and "error" in unknown.json()


async def test_streamed_events_interrupt_and_resume(tmp_path):
    app, _ = app_for(tmp_path)
    async with BackgroundServer(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        thread = (await http.post("/v1/threads", json={"agent": "mission"})).json()["id"]
        async with http.stream("POST", f"/v1/threads/{thread}/runs",
                               json={"input": "please launch", "stream": True}) as response:
            events = await events_of(response)
        kinds = [k for k, _ in events]
        assert kinds[0] == "run" and kinds[-1] == "end"
        assert "tool_call" in kinds and "interrupt" in kinds
        end = events[-1][1]
        assert end["status"] == "interrupted"
        assert [i["value"] for i in end["interrupts"]] == ["launch to mars?"]
        pending = (await http.get(f"/v1/threads/{thread}")).json()
        assert pending["interrupts"] == end["interrupts"] and pending["next"] == ["tools"]
        async with http.stream("POST", f"/v1/threads/{thread}/runs",
                               json={"resume": "yes", "stream": True}) as response:
            events = await events_of(response)
        tokens = "".join(d["text"] for k, d in events if k == "token")
        assert tokens == "Done: launched to mars."
        assert ("tool_result", {"name": "launch", "content": "launched to mars"}) in events
        assert events[-1][1]["status"] == "success"


async def test_cancel_and_the_busy_thread_policies(tmp_path):
    app, _ = app_for(tmp_path, latency=60)  # still running when it is cancelled
    async with BackgroundServer(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        thread = (await http.post("/v1/threads", json={"agent": "mission"})).json()["id"]
        slow = asyncio.create_task(http.post(f"/v1/threads/{thread}/runs",
                                             json={"input": "slow"}))
        async with asyncio.timeout(30):  # until the slow run holds the thread
            while True:
                listed = (await http.get(f"/v1/threads/{thread}/runs")).json()["data"]
                if [r for r in listed if r["status"] == "running"]:
                    break
                await asyncio.sleep(0.05)
        busy = await http.post(f"/v1/threads/{thread}/runs", json={"input": "also"})
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "thread_busy"
        run_id = (await http.get(f"/v1/threads/{thread}/runs")).json()["data"][0]["id"]
        cancelled = await http.post(f"/v1/threads/{thread}/runs/{run_id}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        assert (await slow).json()["status"] == "cancelled"

    queued = tmp_path / "queued"
    queued.mkdir()
    queued_app, _ = app_for(queued, latency=0.3, concurrent_runs="enqueue")
    async with BackgroundServer(queued_app) as url, httpx.AsyncClient(base_url=url,
                                                                       timeout=30) as http:
        thread = (await http.post("/v1/threads", json={"agent": "mission"})).json()["id"]
        first, second = await asyncio.gather(
            http.post(f"/v1/threads/{thread}/runs", json={"input": "one"}),
            http.post(f"/v1/threads/{thread}/runs", json={"input": "two"}))
        assert {first.json()["status"], second.json()["status"]} == {"success"}
        messages = (await http.get(f"/v1/threads/{thread}")).json()["messages"]
        assert len(messages) == 4  # both turns, one after the other


async def test_threads_belong_to_their_key(tmp_path):
    app, db = app_for(tmp_path)
    store = KeyStore(db)
    (_, ann), (_, bob) = await store.create("ann"), await store.create("bob")
    await store.aclose()
    async with BackgroundServer(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        as_ann = {"Authorization": f"Bearer {ann}"}
        as_bob = {"Authorization": f"Bearer {bob}"}
        thread = (await http.post("/v1/threads", json={"agent": "mission"},
                                  headers=as_ann)).json()["id"]
        assert (await http.get(f"/v1/threads/{thread}", headers=as_ann)).status_code == 200
        assert (await http.get(f"/v1/threads/{thread}", headers=as_bob)).status_code == 404
        assert (await http.post(f"/v1/threads/{thread}/runs", json={"input": "x"},
                                headers=as_bob)).status_code == 404
        assert (await http.get("/v1/threads", headers=as_bob)).json()["data"] == []
        assert (await http.get("/v1/threads")).status_code == 401


@pytest.mark.parametrize("body", [{}, {"input": None}])
async def test_a_run_needs_input_or_resume(tmp_path, body):
    app, _ = app_for(tmp_path)
    async with BackgroundServer(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        thread = (await http.post("/v1/threads", json={"agent": "mission"})).json()["id"]
        response = await http.post(f"/v1/threads/{thread}/runs", json=body)
    assert response.status_code == 400 and "needs 'input'" in response.json()["error"]["message"]


async def test_several_interrupts_at_once_are_listed_with_ids_and_answered_by_id(tmp_path):
    sent: list[str] = []

    @tool
    def send_email(to: str) -> str:
        """Send an email."""
        sent.append(to)
        return f"sent to {to}"

    @tool
    async def approve(action: str) -> str:
        """Do an action once a human approves it."""
        answer = interrupt(f"{action}?")
        return f"{action}: done" if answer == "yes" else f"{action}: held ({answer})"

    step = tool_calls(("approve", {"action": "delete acme"}), ("send_email", {"to": "ann"}),
                      ("approve", {"action": "refund 500"}))
    db = f"sqlite:///{tmp_path}/threads.db"
    agent = Agent("office", ScriptedChatModel(replies=[step, "Done."]),
                  tools=[send_email, approve], checkpointer=db)
    app = create_app([agent], database_url=db)
    async with BackgroundServer(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        thread = (await http.post("/v1/threads", json={"agent": "office"})).json()["id"]
        paused = (await http.post(f"/v1/threads/{thread}/runs",
                                  json={"input": "clean up"})).json()
        # Every pending interrupt, in the order of the calls, each with its own id.
        assert paused["status"] == "interrupted"
        assert [i["value"] for i in paused["interrupts"]] == ["delete acme?", "refund 500?"]
        ids = {i["value"]: i["id"] for i in paused["interrupts"]}
        assert len(set(ids.values())) == 2
        state = (await http.get(f"/v1/threads/{thread}")).json()
        assert state["interrupts"] == paused["interrupts"]

        # One answer for two questions, or an id that is not pending: 400, nothing runs.
        ambiguous = await http.post(f"/v1/threads/{thread}/runs", json={"resume": "yes"})
        error = ambiguous.json()["error"]
        assert ambiguous.status_code == 400 and error["code"] == "ambiguous_resume"
        assert error["param"] == "resume" and all(id in error["message"] for id in ids.values())
        stale = "0123456789abcdef0123456789abcdef"
        unknown = await http.post(f"/v1/threads/{thread}/runs",
                                  json={"resume": {stale: "yes", ids["delete acme?"]: "yes"}})
        assert unknown.status_code == 400
        assert unknown.json()["error"]["code"] == "interrupt_not_pending"
        assert stale in unknown.json()["error"]["message"]

        # Answers in the opposite order of the calls, streamed: each reaches its own call.
        async with http.stream("POST", f"/v1/threads/{thread}/runs", json={
                "resume": {ids["refund 500?"]: "no", ids["delete acme?"]: "yes"},
                "stream": True}) as response:
            events = await events_of(response)
        # (The email was reported by the first run; this one only replays its saved result.)
        results = sorted(d["content"] for k, d in events if k == "tool_result")
        assert results == ["delete acme: done", "refund 500: held (no)"]
        assert events[-1][1]["status"] == "success" and events[-1][1]["output"] == "Done."
        messages = (await http.get(f"/v1/threads/{thread}")).json()["messages"]
    assert [m["content"] for m in messages if m["role"] == "tool"] == [
        "delete acme: done", "sent to ann", "refund 500: held (no)"]
    assert [m["tool_call_id"] for m in messages if m["role"] == "tool"] == [
        c["id"] for c in step.tool_calls]
    assert sent == ["ann"]  # ran once, in the first run; not again on resume
