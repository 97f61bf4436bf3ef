"""Plan-and-execute as a LangGraph graph, on the decomposition planner.

``plan`` writes subtasks; ``execute`` runs one subtask per step (a small tool loop), so each
finished subtask is checkpointed; a failed subtask goes to ``revise``, which rewrites the rest
of the plan (up to ``max_revisions`` times); ``synthesize`` answers from the results.

    graph = plan_and_execute(model, tools=[web_search, calculator])
    state = await graph.ainvoke({"messages": [("user", "Compare ...")]})
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, NotRequired, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph

from ponder.agents.action import ActionModule
from ponder.agents.planning.base import ReasoningTrace, question_of
from ponder.agents.planning.decompose import (
    PLAN_PROMPT,
    REVISE_PROMPT,
    SYNTHESIS_PROMPT,
    Decompose,
    results_text,
)
from ponder.models import as_chat_model, list_items


class PlanExecuteState(TypedDict):
    """The state of ``plan_and_execute``: the task, the subtasks to do, the results and any
    failure."""
    messages: Annotated[list[AnyMessage], add_messages]
    task: NotRequired[str]
    plan: NotRequired[list[str]]                   # the subtasks still to do
    done: NotRequired[list[tuple[str, str]]]       # (subtask, result)
    failure: NotRequired[tuple[str, str] | None]   # (subtask, reason) awaiting a revision
    revisions: NotRequired[int]


def plan_and_execute(model: BaseChatModel | str, tools: Sequence[BaseTool | Callable[..., Any]]
                     = (), *, max_subtasks: int = 6, max_revisions: int = 2,
                     max_tool_steps: int = 5, checkpointer: BaseCheckpointSaver | None = None,
                     name: str = "plan_and_execute") -> CompiledStateGraph:
    """A graph that plans subtasks, runs one per step through ``tools``, revises on failure and
    answers from the results.

    Plan-and-execute after Plan-and-Solve (Wang et al. 2023, "Plan-and-Solve Prompting"), on the
    ``Decompose`` planner's prompts. At most ``max_subtasks`` subtasks per plan, ``max_revisions``
    rewrites of the plan (later failures are noted and skipped), ``max_tool_steps`` tool-loop steps
    per subtask. Each subtask is a node step, so a checkpointer keeps every finished one. The answer
    is the turn's AIMessage.
    """
    model = as_chat_model(model)
    decompose = Decompose(max_subtasks=max_subtasks, max_revisions=max_revisions,
                          max_tool_steps=max_tool_steps)
    action = ActionModule(tools, max_steps=max_tool_steps)

    async def plan(state: PlanExecuteState) -> dict[str, Any]:
        task = question_of(state)
        reply = await ReasoningTrace(model).ask("plan", PLAN_PROMPT.format(n=max_subtasks,
                                                                        question=task))
        return {"task": task, "plan": list_items(reply.text, max_subtasks), "done": [],
                "failure": None, "revisions": 0}

    async def execute(state: PlanExecuteState) -> dict[str, Any]:
        subtask, *rest = state["plan"]
        ok, result = await decompose.run_subtask(ReasoningTrace(model), action, state["task"],
                                                 subtask, state["done"])
        if ok:
            return {"plan": rest, "done": [*state["done"], (subtask, result)]}
        return {"plan": rest, "failure": (subtask, result)}

    async def revise(state: PlanExecuteState) -> dict[str, Any]:
        subtask, reason = state["failure"]
        if state["revisions"] >= max_revisions:  # out of revisions: note it, carry on
            return {"failure": None, "done": [*state["done"], (subtask, f"(failed: {reason})")]}
        reply = await ReasoningTrace(model).ask("revise", REVISE_PROMPT.format(
            question=state["task"], results=results_text(state["done"]), subtask=subtask,
            reason=reason, n=max_subtasks))
        return {"failure": None, "revisions": state["revisions"] + 1,
                "plan": list_items(reply.text, max_subtasks)}

    async def synthesize(state: PlanExecuteState) -> dict[str, Any]:
        reply = await ReasoningTrace(model).ask("synthesize", SYNTHESIS_PROMPT.format(
            question=state["task"], results=results_text(state["done"])))
        return {"messages": [AIMessage(reply.text)]}

    async def next_step(state: PlanExecuteState) -> str:
        if state.get("failure"):
            return "revise"
        return "execute" if state.get("plan") else "synthesize"

    builder = StateGraph(PlanExecuteState)
    for node in (plan, execute, revise, synthesize):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "plan")
    for node in ("plan", "execute", "revise"):
        builder.add_conditional_edges(node, next_step, ["execute", "revise", "synthesize"])
    builder.add_edge("synthesize", END)
    return builder.compile(checkpointer=checkpointer, name=name)
