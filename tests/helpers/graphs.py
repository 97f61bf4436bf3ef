"""Graph modules as users write them, for tests that load or serve them."""

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
