"""Task decomposition: plan, execute through tools, revise on failure, synthesise."""

from langchain_core.tools import tool

from ponder import Agent, Profile
from ponder.agents.planning import Decompose
from ponder.testing import ScriptedChatModel, tool_calls

PRICES = {"sencha": 12.5, "assam": 9.8}


@tool
def price(tea: str) -> str:
    """The price of a tin of tea."""
    if tea.lower() not in PRICES:
        raise KeyError(f"no tea called {tea}")
    return str(PRICES[tea.lower()])


def shop_model():
    def reply(messages):
        prompt = messages[-1].content if messages[-1].type == "human" else ""
        if messages[-1].type == "tool":
            return f"found {messages[-1].content}"
        if prompt.startswith("Break this task"):
            return "1. Look up the price of Matcha\n2. Summarise"
        if "This subtask failed" in prompt:
            return "1. Look up the price of Sencha instead\n2. Summarise"
        if "Now do this subtask" in prompt:
            subtask = prompt.rsplit("Now do this subtask, using your tools when they help: ", 1)[1]
            if "Matcha" in subtask:
                return "FAILED: we do not sell Matcha"
            if "Sencha" in subtask:
                return tool_calls(("price", {"tea": "sencha"}))
            return "Sencha costs 12.5"
        if prompt.startswith("Task:"):
            assert "found 12.5" in prompt
            return "A tin of Sencha costs $12.50 (we have no Matcha)."
        return "?"

    return ScriptedChatModel(replies=reply)


async def test_plan_execute_revise_synthesise():
    model = shop_model()
    solution = await Decompose(tools=[price]).solve("What does green tea cost?", model)
    assert solution.answer == "A tin of Sencha costs $12.50 (we have no Matcha)."
    assert solution.details["revisions"] == 1
    plan = solution.details["plan"]
    assert [p["ok"] for p in plan] == [False, True, True]
    assert plan[0]["result"] == "we do not sell Matcha"
    assert plan[1]["result"] == "found 12.5"
    kinds = [s.kind for s in solution.steps]
    assert kinds[0] == "plan" and "revise" in kinds and kinds[-1] == "synthesize"


async def test_revisions_are_bounded():
    model = ScriptedChatModel(replies=lambda m: "1. Impossible step"
                              if "Break this task" in m[-1].content
                              or "This subtask failed" in m[-1].content
                              else "FAILED: cannot" if "Now do" in m[-1].content else "gave up")
    solution = await Decompose(max_revisions=2).solve("do the impossible", model)
    assert solution.details["revisions"] == 2 and solution.answer == "gave up"


async def test_as_an_agent_planner_with_the_agents_tools():
    model = shop_model()
    agent = Agent("shopkeeper", model, Profile(role="a tea shop keeper"), tools=[price],
                  planner=Decompose(), checkpointer=False)
    state = await agent.ainvoke("What does green tea cost?")
    assert state["messages"][-1].content.startswith("A tin of Sencha costs $12.50")
    assert "Look up the price of Sencha instead" in state["plan"]
    assert all("a tea shop keeper" in call[0].content for call in model.calls)
