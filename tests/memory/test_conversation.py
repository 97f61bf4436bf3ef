"""Conversation memory in the agent: the prompt fits the budget, tool calls stay with their
results, older turns fold into a summary that survives a restart, and a 500-turn thread stays
small; long-term memory writes stay off the reply's critical path."""

import asyncio
import time

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from ponder import Agent
from ponder.memory import ConversationMemory
from ponder.memory.longterm import LongTermMemory
from ponder.testing import HashingEmbeddings, ScriptedChatModel


def test_fit_keeps_tool_calls_with_their_results():
    call = AIMessage("", tool_calls=[{"name": "calculator", "args": {"expression": "2+2"},
                                      "id": "c1"}])
    history = [HumanMessage("first question " * 40), AIMessage("first answer " * 40),
               HumanMessage("what is 2+2?"), call,
               ToolMessage("4", tool_call_id="c1"), AIMessage("It is 4.")]
    memory = ConversationMemory(max_tokens=150)
    fitted = memory.fit(history)
    assert fitted == history[2:]  # the whole current turn, the old one dropped
    assert memory.tokens(fitted) <= 150
    assert memory.fit(history[:2]) == history[:2] or memory.tokens(history[:2]) > 150


def _summarising_model(seen):
    def reply(messages):
        system = messages[0]
        if isinstance(system, SystemMessage) and system.content.startswith("Summarise"):
            text = messages[-1].content  # a rolling summary: the one so far, then new turns
            earlier = [line.removeprefix("SUMMARY: ") for line in text.splitlines()
                       if line.startswith("SUMMARY: ")]
            new = [line.split(": ", 1)[1][:20] for line in text.splitlines()
                   if line.startswith("Human: ")]
            return "SUMMARY: " + " | ".join(earlier + new)
        seen.append(messages)
        return "Reply " + "words " * 30
    return ScriptedChatModel(replies=reply)


async def test_old_turns_fold_into_a_summary_that_survives_a_restart(database_url):
    url = database_url
    seen = []
    conversation = ConversationMemory(max_tokens=300)
    agent = Agent("helper", _summarising_model(seen), conversation=conversation,
                  checkpointer=url)
    for i in range(8):
        await agent.aask(f"Question number {i} " + "about tea " * 10, thread_id="t")
    state = (await agent.aget_state("t")).values
    assert state["summary"].startswith("SUMMARY: ")
    assert "Question number 0" in state["summary"]
    assert conversation.tokens(state["messages"]) <= 300 + 120  # at most one turn over
    assert all(conversation.tokens(m[1:]) <= 300 for m in seen)  # every prompt in budget
    await agent.aclose()

    restarted = Agent("helper", _summarising_model(seen), conversation=conversation,
                      checkpointer=url)
    await restarted.aask("And now?", thread_id="t")
    system = seen[-1][0].content
    assert "Summary of the earlier conversation:\nSUMMARY: " in system
    await restarted.aclose()


async def test_a_500_turn_thread_keeps_the_prompt_in_budget_and_storage_bounded(tmp_path):
    path = tmp_path / "long.db"
    seen = []
    conversation = ConversationMemory(max_tokens=1000)
    agent = Agent("helper", _summarising_model(seen), conversation=conversation,
                  checkpointer=f"sqlite:///{path}")
    sizes = {}
    for i in range(500):
        await agent.aask(f"Turn {i}: " + "tell me more about oolong " * 5, thread_id="long")
        if i in (99, 499):
            await agent.flush()
            sizes[i] = await asyncio.to_thread(_size, tmp_path)
    assert max(conversation.tokens(m[1:]) for m in seen) <= 1000
    state = (await agent.aget_state("long")).values
    assert len(state["messages"]) < 40
    # Storage does not grow with the thread: 500 turns take no more room than 100 (the SQLite
    # file reuses freed pages; the WAL is bounded by checkpointing).
    assert sizes[499] < 1.5 * sizes[99] and sizes[499] < 10_000_000
    await agent.aclose()


def _size(folder):
    return sum(p.stat().st_size for p in folder.iterdir())


def _extracting_model(latency):
    def reply(messages):
        if messages[0].content.startswith("From this conversation turn"):
            user = messages[-1].content.splitlines()[0].removeprefix("User: ")
            return f'[{{"fact": "The user said: {user}", "importance": 5}}]'
        return "Sure."
    return ScriptedChatModel(replies=reply, latency=latency)


async def test_memory_writes_do_not_delay_the_reply_and_are_flushed_on_close(database_url):
    extractor = _extracting_model(latency=2.0)  # a slow model for the background work
    memory = LongTermMemory(database_url, model=extractor,
                            embeddings=HashingEmbeddings(), similarity=1.1)
    agent = Agent("helper", ScriptedChatModel(replies=lambda m: "Sure."), memory=memory,
                  checkpointer=False)
    started = time.perf_counter()
    await agent.aask("My name is Ada.", user_id="ada")
    # The reply did not wait for the 2 s write (a margin that holds on a busy machine), which
    # is still under way.
    assert time.perf_counter() - started < 2.0
    assert await memory.list("ada") == []
    await agent.aclose()                          # flushes it
    assert [m.text for m in await memory.list("ada")] == ["The user said: My name is Ada."]


async def test_memory_costs_a_reply_less_than_a_tenth(database_url):
    async def median_reply_s(agent: Agent) -> float:
        times = []
        for i in range(7):
            started = time.perf_counter()
            await agent.aask(f"I like tea number {i}.", thread_id=f"t{i % 2}", user_id="ada")
            times.append(time.perf_counter() - started)
        await agent.aclose()
        return sorted(times)[len(times) // 2]

    def model():
        return ScriptedChatModel(replies=lambda m: "Noted.", latency=0.2)

    bare = await median_reply_s(Agent("helper", model(), checkpointer=database_url))
    memory = LongTermMemory(database_url, model=_extracting_model(latency=0.2),
                            embeddings=HashingEmbeddings())
    remembering = await median_reply_s(Agent(
        "helper", model(), memory=memory, checkpointer=database_url,
        conversation=ConversationMemory(max_tokens=500)))
    # The target, under 1.10, is measured by ``python -m benchmarks.memory`` on a quiet machine.
    # Here the margin holds on a busy one and still tells the mechanism: a reply that waited
    # for the background extraction (one more 0.2 s model call) would take twice as long.
    assert remembering / bare < 1.5, (bare, remembering)


async def test_concurrent_users_never_see_each_others_memories(database_url):
    memory = LongTermMemory(database_url, model=_extracting_model(0.01),
                            embeddings=HashingEmbeddings(), similarity=1.1, k=10)
    prompts = {}

    def reply(messages):
        prompts.setdefault(messages[-1].content, []).append(messages[0].content)
        return "Sure."

    agent = Agent("helper", ScriptedChatModel(replies=reply), memory=memory, checkpointer=False)
    users = [f"user{i}" for i in range(6)]
    await asyncio.gather(*(agent.aask(f"My secret word is {u}-secret.", user_id=u)
                           for u in users))
    await agent.flush()
    await asyncio.gather(*(agent.aask(f"What is my secret word, {u}?", user_id=u)
                           for u in users))
    for u in users:
        [system] = prompts[f"What is my secret word, {u}?"]
        assert f"{u}-secret" in system
        assert not any(f"{other}-secret" in system for other in users if other != u)
    await agent.aclose()
