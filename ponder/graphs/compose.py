"""Composing agents and graphs: sequence, parallel map-reduce, router, supervisor.

Every part is an Agent or a compiled LangGraph graph whose state has ``messages``; a composition
is itself a compiled graph over ``MessagesState``, so compositions nest. Parts run as subgraphs:
interrupts, checkpoints and streaming (``subgraphs=True`` shows nested tokens) pass through.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.pregel import Pregel
from langgraph.types import Send
from typing_extensions import TypedDict

from ponder.agents.agent import Agent, final_text
from ponder.agents.profile import Profile
from ponder.config import ConfigurationError
from ponder.graphs.targets import as_target

Part = Agent | Pregel


def _graph(part: Part) -> Pregel:
    return as_target(part).graph


def _name(part: Part, fallback: str) -> str:
    name = getattr(part, "name", None)
    return name if name and name != "LangGraph" else fallback


def _unique_names(parts: Sequence[Part], prefix: str) -> list[str]:
    names = [_name(p, f"{prefix}_{i}") for i, p in enumerate(parts)]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"two parts share a name ({', '.join(names)}): name them apart")
    return names


def sequence(*parts: Part, name: str = "sequence") -> CompiledStateGraph:
    """Each part in turn; each sees the conversation so far, replies included."""
    if not parts:
        raise ConfigurationError("sequence() needs at least one agent or graph")
    builder = StateGraph(MessagesState)
    previous = START
    for node, part in zip(_unique_names(parts, "step"), parts, strict=True):
        builder.add_node(node, _graph(part))
        builder.add_edge(previous, node)
        previous = node
    builder.add_edge(previous, END)
    return builder.compile(name=name)


class _MapState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    results: Annotated[list[str], operator.add]  # one per mapped item, in completion order
    item: str


def parallel(mapper: Part, split: Callable[[str], list[str]], *,
             reduce: Part | Callable[[str, list[str]], str] | None = None,
             name: str = "parallel") -> CompiledStateGraph:
    """Map-reduce: ``split`` the last user message into items, run ``mapper`` on every item at
    once (LangGraph ``Send``), then ``reduce`` the results (a part that reads them as a message,
    a function ``(question, results) -> answer``, or none: the results, one per line)."""
    mapped = _graph(mapper)

    async def run_item(state: _MapState, config: RunnableConfig) -> dict[str, Any]:
        out = await mapped.ainvoke({"messages": [HumanMessage(state["item"])]}, config)
        return {"results": [final_text(out)]}

    def fan_out(state: _MapState) -> list[Send]:
        items = split(_last_human(state["messages"]))
        if not items:
            raise ValueError("split() returned no items to map over")
        return [Send("map", {"item": item}) for item in items]

    builder = StateGraph(_MapState)
    builder.add_node("map", run_item)
    builder.add_conditional_edges(START, fan_out, ["map"])
    if reduce is None or (callable(reduce) and not isinstance(reduce, Part)):
        def combine(state: _MapState) -> dict[str, Any]:
            results = state.get("results", [])
            text = (reduce(_last_human(state["messages"]), results) if reduce
                    else "\n".join(results))
            return {"messages": [("ai", text)]}

        builder.add_node("reduce", combine)
    else:
        reducer = _graph(reduce)

        async def reduce_with_part(state: _MapState, config: RunnableConfig) -> dict[str, Any]:
            listing = "\n".join(f"- {r}" for r in state.get("results", []))
            prompt = f"{_last_human(state['messages'])}\n\nResults to combine:\n{listing}"
            out = await reducer.ainvoke({"messages": [HumanMessage(prompt)]}, config)
            return {"messages": [("ai", final_text(out))]}

        builder.add_node("reduce", reduce_with_part)
    builder.add_edge("map", "reduce")
    builder.add_edge("reduce", END)
    return builder.compile(name=name)


def router(routes: dict[str, Part], choose: Callable[[list[AnyMessage]], str] | BaseChatModel,
           *, name: str = "router") -> CompiledStateGraph:
    """Send the conversation to one route: ``choose(messages) -> route name``, or a chat model
    asked to name the route."""
    if not routes:
        raise ConfigurationError("router() needs at least one route")

    async def pick(state: MessagesState) -> str:
        if isinstance(choose, BaseChatModel):
            question = _last_human(state["messages"])
            reply = await choose.ainvoke(
                f"Which of these should handle the request? Answer with one name only: "
                f"{', '.join(routes)}.\n\nRequest: {question}")
            words = [w.strip(".,:;'\"").lower() for w in reply.text.split()]
            chosen = next((r for r in routes if r.lower() in words), None)
        else:
            chosen = choose(state["messages"])
        if chosen not in routes:
            raise ValueError(f"the router chose {chosen!r}, which is not one of "
                             f"{', '.join(routes)}")
        return chosen

    builder = StateGraph(MessagesState)
    for route, part in routes.items():
        builder.add_node(route, _graph(part))
        builder.add_edge(route, END)
    builder.add_conditional_edges(START, pick, list(routes))
    return builder.compile(name=name)


def delegate(part: Part, *, name: str | None = None, description: str | None = None
             ) -> BaseTool:
    """A tool that hands a request to ``part`` and returns its answer."""
    graph = _graph(part)
    tool_name = f"ask_{(name or _name(part, 'helper')).replace('-', '_').replace('.', '_')}"
    profile = getattr(part, "profile", None)
    about = description or (f"Ask {profile.role}." if isinstance(profile, Profile) else
                            f"Ask {tool_name.removeprefix('ask_')}.")

    async def ask(request: str, config: RunnableConfig) -> str:
        out = await graph.ainvoke({"messages": [HumanMessage(request)]}, config)
        return final_text(out)

    return StructuredTool.from_function(coroutine=ask, name=tool_name,
                                        description=f"{about} Give it a complete request.")


def supervisor(name: str, model: BaseChatModel | str | None, workers: Sequence[Part], *,
               profile: Profile | None = None, **options: Any) -> Agent:
    """A coordinating agent whose tools are its workers: it delegates by calling them, several
    at once when a step needs them (the action module runs one step's calls concurrently)."""
    if not workers:
        raise ConfigurationError("supervisor() needs at least one worker")
    names = _unique_names(workers, "worker")
    profile = profile or Profile(
        role="a supervisor who delegates to specialists",
        instructions=("Split the request into parts for your specialists and ask them; ask "
                      "several at once when their parts do not depend on each other.",
                      "Combine their answers into one reply."))
    tools = [delegate(w, name=n) for w, n in zip(workers, names, strict=True)]
    return Agent(name, model, profile, tools=tools, **options)


def _last_human(messages: Sequence[AnyMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.text
    return ""
