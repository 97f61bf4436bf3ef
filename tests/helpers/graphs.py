"""Graph modules as users write them, for tests that load or serve them."""

import textwrap

# A graph module as users write them: a plain typing.TypedDict state, which pydantic refuses to
# build a schema for on Python 3.11 (it asks for typing_extensions.TypedDict).
TYPED_DICT_GRAPH = '''
import typing
from typing import Annotated

from langgraph.graph import START, StateGraph, add_messages


class State(typing.TypedDict):
    messages: Annotated[list, add_messages]
    turns: int


def answer(state: State):
    users = [m for m in state["messages"] if m.type == "human"]
    return {"messages": [("ai", f"typed turn {len(users)}")], "turns": len(users)}


builder = StateGraph(State)
builder.add_node("answer", answer)
builder.add_edge(START, "answer")
graph = builder.compile(name="typed-graph")


class Counter(typing.TypedDict):
    count: int


class Wide(typing.TypedDict):
    messages: Annotated[list, add_messages]
    question: str


counter = StateGraph(Counter)
counter.add_node("count", lambda state: {"count": state["count"] + 1})
counter.add_edge(START, "count")
no_messages = counter.compile(name="counter")

narrow = StateGraph(Wide, input_schema=Counter)
narrow.add_node("noop", lambda state: {})
narrow.add_edge(START, "noop")
messages_not_in_input = narrow.compile(name="narrow")
'''

# Graphs as served over the Agent Server API: an echo that writes to the custom stream, a slow
# one, one that asks with interrupt(), and one that fails.
AGENT_SERVER_GRAPHS = textwrap.dedent('''
    import asyncio
    from langchain_core.messages import AIMessage
    from langgraph.config import get_stream_writer
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.types import interrupt

    def _graph(name, node):
        builder = StateGraph(MessagesState)
        builder.add_node(name, node)
        builder.add_edge(START, name)
        return builder.compile(name=name)

    def echo_node(state):
        users = [m for m in state["messages"] if m.type == "human"]
        get_stream_writer()({"echoing": users[-1].content})
        return {"messages": [AIMessage(f"turn {len(users)}: {users[-1].content}")]}

    async def slow_node(state):
        await asyncio.sleep(1.5)
        return {"messages": [AIMessage(f"slow: {state['messages'][-1].content}")]}

    def ask_node(state):
        tea = interrupt("which tea?")
        return {"messages": [AIMessage(f"brewing {tea}")]}

    def fail_node(state):
        raise ValueError("the kettle is broken")

    echo = _graph("echo", echo_node)
    slow = _graph("slow", slow_node)
    asker = _graph("asker", ask_node)
    failing = _graph("failing", fail_node)
''')
