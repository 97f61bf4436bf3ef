"""Every chat completion is a durable run holding its thread's lease: concurrent turns on one
conversation are all kept, in order, across server processes; conversations are told apart by
their content and the caller's key, never by a shared opening."""

import asyncio

import httpx
import openai
import pytest

from ponder.graphs.runs import RunRecorder
from ponder.graphs.targets import load_target
from ponder.server.app import create_app
from ponder.server.keys import KeyStore
from ponder.testing import BackgroundServer
from tests.helpers.serving import Served

# A graph that takes a while to answer, so concurrent turns overlap; each reply says which turn
# of its thread it is and what it answers.
SLOW_ECHO = '''
import asyncio
from langchain_core.messages import AIMessage
from langgraph.graph import START, MessagesState, StateGraph

async def reply(state):
    await asyncio.sleep(0.2)
    users = [m for m in state["messages"] if m.type == "human"]
    return {"messages": [AIMessage(f"turn {len(users)}: {users[-1].content}")]}

builder = StateGraph(MessagesState)
builder.add_node("reply", reply)
builder.add_edge(START, "reply")
graph = builder.compile(name="echo")
'''


async def _ask(client, messages, **options):
    raw = await client.chat.completions.with_raw_response.create(
        model="echo", messages=messages, **options)
    return raw.headers["x-thread-id"], raw.parse().choices[0].message.content


async def test_concurrent_turns_on_one_conversation_are_all_kept_across_processes(
        tmp_path, database_url):
    with Served(tmp_path, database_url, SLOW_ECHO) as server:
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused",
                                    max_retries=0, timeout=120)
        for round, (option, value) in enumerate([("user", "ann"),
                                                 ("extra_headers", {"X-Thread-Id": "t-1"})]):
            asked = await asyncio.gather(*[
                _ask(client, [{"role": "user", "content": f"q{round}.{i}"}], **{option: value})
                for i in range(4)])
            [thread_id] = {t for t, _ in asked}
            replies = sorted(r for _, r in asked)
            assert [r.split(":")[0] for r in replies] == [f"turn {n}" for n in range(1, 5)]
            stored = await server.thread(thread_id)
            assert len(stored) == 8 and sorted(stored[1::2]) == replies  # every turn kept
            # In the order the turns ran: each reply follows its own question.
            assert all(a.endswith(q) for q, a in zip(stored[::2], stored[1::2], strict=True))
        recorder = RunRecorder(database_url)
        try:
            runs = await recorder.list(100)
        finally:
            await recorder.aclose()
        assert len(runs) == 8 and {r.status for r in runs} == {"success"}


async def test_reject_refuses_a_turn_on_a_busy_thread_with_409(tmp_path):
    url = f"sqlite:///{tmp_path}/reject.db"
    with Served(tmp_path, url, SLOW_ECHO, PONDER_MULTITASK_STRATEGY="reject") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            answers = await asyncio.gather(*[http.post(
                "/v1/chat/completions", headers={"X-Thread-Id": "busy"},
                json={"model": "echo", "messages": [{"role": "user", "content": f"q{i}"}]})
                for i in range(3)])
        codes = sorted(a.status_code for a in answers)
        assert codes[0] == 200 and 409 in codes
        refused = next(a for a in answers if a.status_code == 409).json()["error"]
        assert refused["code"] == "thread_busy" and "busy" in refused["message"]
        kept = await server.thread("busy")
        assert len(kept) == 2 * codes.count(200)  # nothing half-written by the refused ones


async def test_concurrent_first_requests_on_a_fresh_database(tmp_path, database_url):
    with Served(tmp_path, database_url, SLOW_ECHO) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            answers = await asyncio.gather(*[http.post("/v1/chat/completions", json={
                "model": "echo", "messages": [{"role": "user", "content": f"first {i}"}]})
                for i in range(6)])
        assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]


@pytest.fixture
def echo_server(tmp_path):
    (tmp_path / "echo_graph.py").write_text(SLOW_ECHO)
    db = f"sqlite:///{tmp_path}/identity.db"
    target = load_target(f"{tmp_path}/echo_graph.py:graph", database_url=db)
    with BackgroundServer(create_app([target], database_url=db)) as url:
        yield openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


async def test_the_same_opening_never_shares_a_thread(echo_server):
    hi = [{"role": "user", "content": "Hi"}]
    (first, _), (second, reply) = [await _ask(echo_server, hi) for _ in range(2)]
    assert first != second and reply == "turn 1: Hi"  # the second is not shown the first
    # The first client goes on: its conversation continues its own thread.
    going_on = hi + [{"role": "assistant", "content": "turn 1: Hi"},
                     {"role": "user", "content": "my secret"}]
    a_thread, a_reply = await _ask(echo_server, going_on)
    assert a_reply == "turn 2: my secret"
    # Both clients saw the same reply, so "Hi / turn 1: Hi" is ambiguous: the other client
    # going on gets a thread of its own, opened with its own history, never the first's.
    b_thread, b_reply = await _ask(echo_server, hi + [
        {"role": "assistant", "content": "turn 1: Hi"}, {"role": "user", "content": "hello"}])
    assert b_thread not in (a_thread, first) and b_reply == "turn 2: hello"


async def test_a_conversation_continues_only_where_it_matches(echo_server):
    opening = [{"role": "user", "content": "tea?"}]
    thread, reply = await _ask(echo_server, opening)
    history = opening + [{"role": "assistant", "content": reply},
                         {"role": "user", "content": "green"}]
    same, reply2 = await _ask(echo_server, history)
    assert same == thread and reply2 == "turn 2: green"
    # An edited earlier message: a new thread, opened with the client's history.
    edited = [{"role": "user", "content": "coffee?"}, *history[1:]]
    branched, reply3 = await _ask(echo_server, edited)
    assert branched != thread and reply3 == "turn 2: green"
    # Asking again from an earlier point (a regenerate): that point is not the thread's latest.
    again, _ = await _ask(echo_server, history)
    assert again not in (thread, branched)


async def test_explicit_threads_are_scoped_to_the_key(tmp_path):
    (tmp_path / "echo_graph.py").write_text(SLOW_ECHO)
    db = f"sqlite:///{tmp_path}/keys.db"
    target = load_target(f"{tmp_path}/echo_graph.py:graph", database_url=db)
    async with KeyStore(db) as keys:
        (_, one), (_, two) = await keys.create("one"), await keys.create("two")
    async with BackgroundServer(create_app([target], database_url=db)) as url:
        asked = []
        for secret in (one, two, one):
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0)
            asked.append(await _ask(client, [{"role": "user", "content": "hi"}], user="ann"))
    assert asked[0][0] != asked[1][0] and asked[0][0] == asked[2][0]
    assert [r for _, r in asked] == ["turn 1: hi", "turn 1: hi", "turn 2: hi"]
