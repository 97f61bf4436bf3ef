"""The same langgraph-sdk script against ``langgraph dev`` (the reference Agent Server) and
``ponder serve`` gives the same answers: ids, outputs, stream events, statuses, interrupts,
double texting."""

import asyncio

import httpx
from langgraph_sdk import get_client

from ponder.server.app import create_app
from ponder.testing import BackgroundServer
from tests.helpers.graphs import AGENT_SERVER_GRAPHS as GRAPHS
from tests.helpers.reference import ReferenceServer

NAMES = ["echo", "slow", "asker"]


def said(text):
    return {"messages": [{"role": "user", "content": text}]}


def contents(values):
    return [(m["type"], m["content"]) for m in values["messages"]]


async def transcript(url: str) -> dict:
    """What a client of the Agent Server sees, without ids and times."""
    client = get_client(url=url, api_key=None)
    seen: dict = {}
    assistants = await client.assistants.search(limit=100)
    seen["assistants"] = sorted((a["graph_id"], a["assistant_id"]) for a in assistants)
    thread = (await client.threads.create(metadata={"user": "ann"}))["thread_id"]
    seen["new thread"] = {k: v for k, v in (await client.threads.get(thread)).items()
                          if k in ("status", "metadata", "values")}
    seen["wait"] = contents(await client.runs.wait(thread, "echo", input=said("hi")))
    parts = [p async for p in client.runs.stream(thread, "echo", input=said("again"),
                                                 stream_mode=["values", "updates", "custom"])]
    seen["stream events"] = [p.event for p in parts]
    seen["custom"] = [p.data for p in parts if p.event == "custom"]
    seen["updates"] = [{node: contents(update) for node, update in p.data.items()}
                       for p in parts if p.event == "updates"]
    seen["state"] = contents((await client.threads.get_state(thread))["values"])
    seen["runs"] = [r["status"] for r in await client.runs.list(thread)]

    asking = (await client.threads.create())["thread_id"]
    paused = await client.runs.wait(asking, "asker", input=said("tea please"))
    seen["interrupt"] = [i["value"] for i in paused["__interrupt__"]]
    waiting = await client.threads.get(asking)
    seen["interrupted thread"] = (waiting["status"],
                                  [[i["value"] for i in v] for v in waiting["interrupts"].values()])
    seen["resumed"] = contents(await client.runs.wait(asking, "asker",
                                                      command={"resume": "sencha"}))
    seen["resumed thread"] = (await client.threads.get(asking))["status"]

    busy = (await client.threads.create())["thread_id"]
    first = await client.runs.create(busy, "slow", input=said("one"))
    seen["created"] = first["status"]
    try:
        await client.runs.create(busy, "slow", input=said("two"), multitask_strategy="reject")
        seen["reject"] = "accepted"
    except httpx.HTTPStatusError as exc:
        seen["reject"] = exc.response.status_code
    queued = await client.runs.create(busy, "slow", input=said("three"))
    await client.runs.join(busy, queued["run_id"])
    seen["enqueued"] = contents((await client.threads.get_state(busy))["values"])
    seen["first run"] = (await client.runs.get(busy, first["run_id"]))["status"]
    try:
        await client.threads.get("00000000-0000-0000-0000-000000000000")
    except httpx.HTTPStatusError as exc:
        seen["missing thread"] = exc.response.status_code
    return seen


async def test_the_same_script_gets_the_same_answers(tmp_path):
    (tmp_path / "reference").mkdir()
    (tmp_path / "ponder").mkdir()
    (tmp_path / "ponder" / "graphs.py").write_text(GRAPHS)
    db = f"sqlite:///{tmp_path}/ponder/parity.db"
    refs = [f"{tmp_path}/ponder/graphs.py:{name}" for name in NAMES]
    with ReferenceServer(tmp_path / "reference", GRAPHS, NAMES) as reference:
        expected = await transcript(reference.url)
    async with BackgroundServer(create_app(refs, database_url=db)) as ours:
        got = await asyncio.wait_for(transcript(ours), 120)
    assert got == expected
