"""Tool approval over the Agent Server API, with the official ``langgraph-sdk`` client against
``ponder serve``: each call's request is an interrupt, answered by ``command.resume`` by id;
answers that are not decisions are refused (400) with nothing run; a server killed (kill -9)
between an approval and the turn's answer leaves the call run once, the run finished by another
server."""

import asyncio
import signal

import httpx
import pytest
from langgraph_sdk import get_client

from tests.helpers.serving import Served

SHOP = '''
import asyncio
import os
from pathlib import Path

from ponder import Agent
from ponder.testing import ScriptedChatModel, tool_calls
from ponder.tools import tool

HERE = Path(__file__).parent


@tool(approval=True)
def send_email(to: str) -> str:
    """Send an email."""
    with (HERE / "ran.log").open("a") as log:
        log.write(f"send_email {to}\\n")
    return f"sent to {to}"


@tool(approval=lambda args: args["amount"] > 100)
def pay(amount: int) -> str:
    """Pay an amount, in dollars."""
    with (HERE / "ran.log").open("a") as log:
        log.write(f"pay {amount}\\n")
    return f"paid {amount}"


async def reply(messages):
    if messages[-1].type != "tool":
        return tool_calls(("send_email", {"to": "ann"}), ("pay", {"amount": 500}))
    if os.environ.get("DIE_AFTER_THE_CALLS"):  # hold the turn here: the test kills us
        (HERE / "dying").write_text("")
        await asyncio.sleep(600)
    turn = messages[max(i for i, m in enumerate(messages) if m.type == "human"):]
    return "Done: " + "; ".join(sorted(m.content for m in turn if m.type == "tool"))


graph = Agent("shop", ScriptedChatModel(replies=reply), tools=[send_email, pay])
'''


def said(text):
    return {"messages": [{"role": "user", "content": text}]}


def ran(folder) -> list[str]:
    log = folder / "ran.log"
    return log.read_text().splitlines() if log.exists() else []


async def test_approval_over_the_agent_server_api(tmp_path, database_url):
    with Served(tmp_path, database_url, SHOP, workers=1) as server:
        client = get_client(url=server.url, api_key=None)
        thread = (await client.threads.create())["thread_id"]
        paused = await client.runs.wait(thread, "shop", input=said("mail ann, pay 500"))
        asked = {i["value"]["tool"]: i for i in paused["__interrupt__"]}
        assert asked["pay"]["value"]["args"] == {"amount": 500}
        assert asked["send_email"]["value"]["description"] == "Send an email."
        assert (await client.threads.get(thread))["status"] == "interrupted"

        async def refused(resume) -> str:
            with pytest.raises(httpx.HTTPStatusError) as answer:
                await client.runs.wait(thread, "shop", command={"resume": resume})
            assert answer.value.response.status_code == 400
            return answer.value.response.json()["detail"]

        assert "the decision \"perhaps\" is not one of approve, edit, reject" in await refused(
            {asked["pay"]["id"]: {"decision": "perhaps"}})
        assert "no pending interrupt of thread" in await refused(
            {"0" * 32: {"decision": "approve"}})
        assert ran(tmp_path) == []  # nothing ran

        # Edited arguments that do not fit: asked again (a new interrupt), nothing run.
        again = await client.runs.wait(thread, "shop", command={"resume": {
            asked["pay"]["id"]: {"decision": "edit", "args": {"amount": "lots"}}}})
        [repeated] = [i for i in again["__interrupt__"] if i["value"]["tool"] == "pay"]
        assert repeated["id"] != asked["pay"]["id"]
        assert "do not fit tool 'pay': amount" in repeated["value"]["error"]
        assert ran(tmp_path) == []

        # Answered in the opposite order from the one asked in.
        done = await client.runs.wait(thread, "shop", command={"resume": {
            repeated["id"]: {"decision": "reject", "message": "too much"},
            asked["send_email"]["id"]: {"decision": "approve", "always": True}}})
        assert done["messages"][-1]["content"] == "Done: sent to ann; too much"
        assert done["allowed_tools"] == ["send_email"]
        assert ran(tmp_path) == ["send_email ann"]
        assert (await client.threads.get(thread))["status"] == "idle"


async def test_an_approved_call_runs_once_when_its_server_is_killed(tmp_path, database_url):
    env = {"PONDER_RUN_STALE_S": "2"}
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with Served(tmp_path / "a", database_url, SHOP, workers=1, DIE_AFTER_THE_CALLS="1",
                **env) as doomed, Served(tmp_path / "b", database_url, SHOP, workers=1,
                                         **env) as other:
        client = get_client(url=doomed.url, api_key=None)
        thread = (await client.threads.create())["thread_id"]
        paused = await client.runs.wait(thread, "shop", input=said("mail ann, pay 500"))
        ids = [i["id"] for i in paused["__interrupt__"]]
        run = await client.runs.create(thread, "shop", command={"resume": {
            ids[1]: {"decision": "approve"}, ids[0]: {"decision": "approve"}}})
        for _ in range(600):
            if (tmp_path / "a" / "dying").exists():
                break
            await asyncio.sleep(0.1)
        assert sorted(ran(tmp_path / "a")) == ["pay 500", "send_email ann"]
        doomed.process.send_signal(signal.SIGKILL)  # after the calls, before the answer
        doomed.process.wait(timeout=30)

        survivor = get_client(url=other.url, api_key=None)
        joined = await asyncio.wait_for(survivor.runs.join(thread, run["run_id"]), 60)
        assert joined["messages"][-1]["content"] == "Done: paid 500; sent to ann"
        assert (await survivor.runs.get(thread, run["run_id"]))["status"] == "success"
        # Each approved call ran once: in the killed server, not again in the other.
        assert sorted(ran(tmp_path / "a")) == ["pay 500", "send_email ann"]
        assert ran(tmp_path / "b") == []
