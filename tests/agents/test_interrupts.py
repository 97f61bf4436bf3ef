"""Interrupts among the parallel tool calls of one model step: a call that finished runs once,
every pending interrupt shows with its id, and each answer reaches the interrupt it names.
On SQLite and on Postgres (the checkpoints hold what was already done)."""

import asyncio
from collections import Counter

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, interrupt

from ponder import Agent
from ponder.agents import ResumeError
from ponder.testing import ScriptedChatModel, tool_calls


class Office:
    """Tools with side effects, counting every run; two of them ask a human first."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        office = self

        @tool
        def send_email(to: str) -> str:
            """Send an email (a sync tool: it runs in a worker thread)."""
            office.runs[f"send_email {to}"] += 1
            return f"sent to {to}"

        @tool
        def ask_human(question: str) -> str:
            """Ask the human a question (sync)."""
            office.runs[f"ask_human {question}"] += 1
            return f"{question} -> {interrupt(question)}"

        @tool
        async def approve(action: str) -> str:
            """Do an action once a human approves it (async)."""
            office.runs[f"approve {action}"] += 1
            await asyncio.sleep(0.05)  # the other calls of the step are under way meanwhile
            answer = interrupt(f"{action}?")
            return f"{action}: done" if answer == "yes" else f"{action}: held ({answer})"

        @tool
        def transfer(amount: int) -> str:
            """Transfer money: asks for approval, then for the account."""
            office.runs[f"transfer {amount}"] += 1
            if interrupt(f"transfer {amount}?") != "yes":
                return "not transferred"
            return f"transferred {amount} to {interrupt('to which account?')}"

        self.tools = [send_email, ask_human, approve, transfer]


def office_agent(replies, url_or_saver) -> tuple[Agent, Office, ScriptedChatModel]:
    office = Office()
    model = ScriptedChatModel(replies=replies)
    return Agent("office", model, tools=office.tools, checkpointer=url_or_saver), office, model


def tool_results(state) -> list[tuple[str, str]]:
    """(tool call id, content) of the tool messages of a state, in order."""
    return [(m.tool_call_id, m.content) for m in state["messages"] if isinstance(m, ToolMessage)]


def ids_of(state) -> dict[str, str]:
    """The pending interrupts of an invoke's result: question -> interrupt id."""
    return {i.value: i.id for i in state["__interrupt__"]}


async def test_a_call_that_finished_runs_once_when_another_interrupts(database_url):
    step = tool_calls(("send_email", {"to": "bob@example.com"}),
                      ("ask_human", {"question": "which day?"}))
    agent, office, model = office_agent([step, "Sent, and noted Tuesday."], database_url)
    try:
        paused = await agent.ainvoke("email bob and ask me the day", thread_id="t")
        assert [i.value for i in paused["__interrupt__"]] == ["which day?"]
        assert office.runs["send_email bob@example.com"] == 1

        done = await agent.aresume("t", "Tuesday")
        assert office.runs["send_email bob@example.com"] == 1  # not again on resume
        assert office.runs["ask_human which day?"] == 2  # its node reruns: that is the resume
        email, ask = step.tool_calls
        assert tool_results(done) == [(email["id"], "sent to bob@example.com"),
                                      (ask["id"], "which day? -> Tuesday")]
        assert done["messages"][-1].content == "Sent, and noted Tuesday."
        assert "__interrupt__" not in done and len(model.calls) == 2
    finally:
        await agent.aclose()


async def test_each_answer_reaches_the_interrupt_it_names(database_url):
    step = tool_calls(("approve", {"action": "delete acme"}),
                      ("send_email", {"to": "ann@example.com"}),
                      ("approve", {"action": "refund 500"}))
    agent, office, _ = office_agent([step, "Done."], database_url)
    try:
        paused = await agent.ainvoke("clean up", thread_id="t")
        # Both questions show, in the order of the calls, each with an id of its own.
        assert [i.value for i in paused["__interrupt__"]] == ["delete acme?", "refund 500?"]
        pending = await agent.ainterrupts("t")
        assert [(i.id, i.value) for i in pending] == [(i.id, i.value)
                                                      for i in paused["__interrupt__"]]
        ids = ids_of(paused)
        assert len(set(ids.values())) == 2

        # Answered in the opposite order: each answer still reaches its own call.
        done = await agent.aresume("t", {ids["refund 500?"]: "no", ids["delete acme?"]: "yes"})
        delete, email, refund = step.tool_calls
        assert tool_results(done) == [(delete["id"], "delete acme: done"),
                                      (email["id"], "sent to ann@example.com"),
                                      (refund["id"], "refund 500: held (no)")]
        assert office.runs["send_email ann@example.com"] == 1
    finally:
        await agent.aclose()


async def test_calls_that_failed_or_timed_out_beside_an_interrupt_are_not_run_again():
    runs: Counter[str] = Counter()

    @tool
    async def slow_lookup(item: str) -> str:
        """Look an item up (slower than the tool timeout)."""
        runs["slow_lookup"] += 1
        await asyncio.sleep(5)
        return "found"

    @tool
    def broken(item: str) -> str:
        """Always fails."""
        runs["broken"] += 1
        raise RuntimeError("the printer is on fire")

    office = Office()
    step = tool_calls(("slow_lookup", {"item": "tea"}), ("broken", {"item": "tea"}),
                      ("ask_human", {"question": "which tea?"}))
    agent = Agent("office", ScriptedChatModel(replies=[step, "Sencha it is."]),
                  tools=[slow_lookup, broken, *office.tools], checkpointer=InMemorySaver(),
                  tool_timeout_s=0.2)
    paused = await agent.ainvoke("tea?", thread_id="t")
    assert [i.value for i in paused["__interrupt__"]] == ["which tea?"]
    done = await agent.aresume("t", "Sencha")
    assert [content for _, content in tool_results(done)] == [
        "Error: tool 'slow_lookup' timed out after 0.2 s.",
        "Error: tool 'broken' failed: RuntimeError: the printer is on fire",
        "which tea? -> Sencha"]
    assert runs == Counter({"slow_lookup": 1, "broken": 1})


async def test_many_calls_keep_their_order_and_run_once():
    runs: Counter[int] = Counter()

    @tool
    async def item(n: int) -> str:
        """Process item n; items 3 and 10 need a human's go-ahead."""
        runs[n] += 1
        await asyncio.sleep((12 - n) / 200)  # the later calls finish first
        if n in (3, 10):
            return f"item {n}: {interrupt(f'item {n}?')}"
        return f"item {n}: done"

    step = tool_calls(*[("item", {"n": n}) for n in range(12)])
    agent = Agent("items", ScriptedChatModel(replies=[step, "All done."]), tools=[item],
                  checkpointer=InMemorySaver())
    ids = ids_of(await agent.ainvoke("process", thread_id="t"))
    assert list(ids) == ["item 3?", "item 10?"]
    done = await agent.aresume("t", {ids["item 10?"]: "ten", ids["item 3?"]: "three"})
    assert tool_results(done) == [
        (call["id"], f"item {n}: " + {3: "three", 10: "ten"}.get(n, "done"))
        for n, call in enumerate(step.tool_calls)]
    assert runs == Counter({n: 2 if n in (3, 10) else 1 for n in range(12)})


async def test_answering_some_interrupts_leaves_the_others_pending():
    step = tool_calls(("ask_human", {"question": "first?"}), ("ask_human", {"question": "second?"}),
                      ("ask_human", {"question": "third?"}))
    agent, office, _ = office_agent([step, "All answered."], InMemorySaver())
    ids = ids_of(await agent.ainvoke("ask me three things", thread_id="t"))
    assert list(ids) == ["first?", "second?", "third?"]

    partly = await agent.aresume("t", {ids["second?"]: "B"})
    # The two unanswered ones are still pending, under the same ids; no model call yet.
    assert ids_of(partly) == {"first?": ids["first?"], "third?": ids["third?"]}
    assert [(i.id, i.value) for i in await agent.ainterrupts("t")] == [
        (ids["first?"], "first?"), (ids["third?"], "third?")]

    done = await agent.aresume("t", {ids["third?"]: "C", ids["first?"]: "A"})
    assert [content for _, content in tool_results(done)] == [
        "first? -> A", "second? -> B", "third? -> C"]
    assert done["messages"][-1].content == "All answered."
    assert office.runs["ask_human second?"] == 2  # asked, then answered: never a third time


async def test_a_call_that_asks_twice_gets_each_answer_by_id():
    step = tool_calls(("transfer", {"amount": 70}), ("approve", {"action": "close ticket"}))
    agent, _, _ = office_agent([step, "Transferred."], InMemorySaver())
    first = ids_of(await agent.ainvoke("pay and close", thread_id="t"))
    assert list(first) == ["transfer 70?", "close ticket?"]

    second = await agent.aresume("t", {first["close ticket?"]: "yes", first["transfer 70?"]: "yes"})
    # The transfer's second question has an id of its own; the approved call is done.
    follow_up = ids_of(second)
    assert list(follow_up) == ["to which account?"]
    assert follow_up["to which account?"] not in first.values()

    done = await agent.aresume("t", {follow_up["to which account?"]: "ACME-1"})
    assert [content for _, content in tool_results(done)] == [
        "transferred 70 to ACME-1", "close ticket: done"]


async def test_a_resume_that_does_not_fit_the_pending_interrupts_is_refused():
    step = tool_calls(("approve", {"action": "delete acme"}), ("approve", {"action": "refund 500"}))
    agent, office, model = office_agent([step, "Done."], InMemorySaver())
    ids = ids_of(await agent.ainvoke("clean up", thread_id="t"))

    with pytest.raises(ResumeError, match="2 interrupts are pending") as ambiguous:
        await agent.aresume("t", "yes")
    # The message lists what is pending, with the ids to answer by.
    for question, id in ids.items():
        assert f"{id} asks {question!r}" in str(ambiguous.value)
    assert ambiguous.value.pending == {id: question for question, id in ids.items()}

    stale = "0123456789abcdef0123456789abcdef"
    with pytest.raises(ResumeError, match=f"no pending interrupt .* has the id '{stale}'"):
        await agent.aresume("t", {stale: "yes"})
    with pytest.raises(ResumeError, match="has the id 'note'"):
        await agent.aresume("t", {ids["delete acme?"]: "yes", "note": "hi"})

    with pytest.raises(ResumeError, match="2 interrupts are pending"):
        await agent.aresume("t", Command(resume="yes"))  # a Command of one's own: checked too

    # Nothing ran: the same interrupts wait, and they can still be answered.
    assert office.runs == Counter({"approve delete acme": 1, "approve refund 500": 1})
    assert [i.id for i in await agent.ainterrupts("t")] == list(ids.values())
    done = await agent.aresume("t", {id: "yes" for id in ids.values()})
    assert done["messages"][-1].content == "Done." and len(model.calls) == 2

    # With nothing pending, an id names no interrupt either.
    with pytest.raises(ResumeError, match="Pending: none"):
        await agent.aresume("t", {ids["delete acme?"]: "yes"})


async def test_one_answer_for_one_interrupt_and_a_dict_answer_stay_plain_answers():
    @tool
    def configure(name: str) -> str:
        """Configure something with settings a human gives."""
        settings = interrupt(f"settings for {name}?")
        return f"{name}: {sorted(settings.items())}"

    agent = Agent("cfg", ScriptedChatModel(replies=[tool_calls(("configure", {"name": "db"})),
                                                    "Configured."]),
                  tools=[configure], checkpointer=InMemorySaver())
    await agent.ainvoke("configure the db", thread_id="t")
    done = await agent.aresume("t", {"size": 3, "region": "eu"})  # one answer, itself a dict
    assert tool_results(done)[0][1] == "db: [('region', 'eu'), ('size', 3)]"


async def test_an_interrupt_leaves_no_tool_call_running_and_none_run_twice():
    # Each call of a step is a task of its own: the charge finishes within the turn (nothing
    # runs behind the caller's back once it returns) and is not charged again on resume.
    side_effects = []

    @tool
    async def charge(amount: int) -> str:
        """Charge a card."""
        await asyncio.sleep(0.3)
        side_effects.append(amount)
        return "charged"

    @tool
    def approve(what: str) -> str:
        """Ask a human."""
        return interrupt(what)

    model = ScriptedChatModel(replies=[tool_calls(("charge", {"amount": 5}),
                                                  ("approve", {"what": "ok?"})),
                                       "Charged and approved."])
    agent = Agent("shop", model, tools=[charge, approve], checkpointer=InMemorySaver())
    paused = await agent.ainvoke("buy", thread_id="t")
    charged_by_then = list(side_effects)
    await asyncio.sleep(0.5)
    assert paused["__interrupt__"] and side_effects == charged_by_then == [5]
    await agent.aresume("t", "yes")
    assert side_effects == [5]
