"""Tree of Clarifications (Kim et al. 2023) for ambiguous questions.

An ambiguous question has several readings, each with its own answer. Level by level, the graph
**retrieves** passages for each open question, asks the model to **refine** it into
disambiguated sub-questions answered from those passages, **prunes** the readings the model,
checking each one against the original question and its passages, does not accept (and repeats),
and expands the survivors until ``depth``; then it **merges** every accepted reading into one
long answer.

    graph = clarification_tree(model, knowledge_base, depth=2)
    state = await graph.ainvoke({"messages": [("user", "Who won the World Cup?")]})
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, NotRequired, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.retrievers import BaseRetriever
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph

from ponder.agents.planning.base import ReasoningTrace, question_of
from ponder.graphs.prebuilt.passages import numbered, search
from ponder.memory.knowledge import KnowledgeBase
from ponder.models import as_chat_model, json_list

REFINE_PROMPT = """This question is ambiguous: {question}
{parent}
Passages:
{passages}

List the distinct readings of the question that the passages can answer, each as a precise \
question with its short answer from the passages. Reply with a JSON list like \
[{{"question": "...", "answer": "..."}}], at most {width} items."""

VERIFY_PROMPT = """Original question: {question}
Proposed reading: {reading}
Proposed answer: {answer}

Passages:
{passages}

Is the reading a plausible interpretation of the original question, and do the passages \
support the answer? Reply YES or NO."""

MERGE_PROMPT = """The question "{question}" is ambiguous. These are its readings, each with \
its answer:
{readings}

Write one answer to the original question that explains the ambiguity and answers every \
reading."""


class Reading(TypedDict):
    """One reading of an ambiguous question: the disambiguated question, its answer from the
    passages, and its depth in the tree (0 for the original question)."""
    question: str
    answer: str
    depth: int


class ClarificationState(TypedDict):
    """The state of ``clarification_tree``: the conversation and the tree being built."""
    messages: Annotated[list[AnyMessage], add_messages]
    question: NotRequired[str]
    open: NotRequired[list[Reading]]           # readings to refine at the next level
    passages: NotRequired[dict[str, list[str]]]  # per open question
    readings: NotRequired[list[Reading]]       # accepted, the tree's nodes
    level: NotRequired[int]


def clarification_tree(model: BaseChatModel | str, retriever: KnowledgeBase | BaseRetriever,
                       *, depth: int = 2, width: int = 4, k: int = 4,
                       checkpointer: BaseCheckpointSaver | None = None,
                       name: str = "clarification_tree") -> CompiledStateGraph:
    """A graph that answers an ambiguous question with every reading the passages support.

    Tree of Clarifications: Kim et al. 2023, "Tree of Clarifications: Answering Ambiguous Questions
    with Retrieval-Augmented Large Language Models". Per level: ``k`` passages per open question,
    one refine call per open question (at most ``width`` readings each), one verify call per new
    reading; ``depth`` levels; then one merge call writes the answer as the turn's AIMessage.
    ``retriever`` is a KnowledgeBase (its full pipeline) or any LangChain retriever. A new question
    on the thread starts a new tree. Compiled with ``checkpointer`` and ``name``.
    """
    model = as_chat_model(model)

    async def retrieve(state: ClarificationState) -> dict[str, Any]:
        update: dict[str, Any] = {}
        if state.get("question") != question_of(state):  # a new question: a new tree
            question = question_of(state)
            update = {"question": question, "readings": [], "level": 0,
                      "open": [Reading(question=question, answer="", depth=0)]}
            state = {**state, **update}
        questions = [r["question"] for r in state["open"]]
        found = await asyncio.gather(*(search(retriever, q, k) for q in questions))
        return {**update, "passages": dict(zip(questions, found, strict=True))}

    async def refine(state: ClarificationState) -> dict[str, Any]:
        async def readings_of(node: Reading) -> list[Reading]:
            parent = (f"It was already narrowed to: {node['question']}\n"
                      if node["depth"] else "")
            reply = await ReasoningTrace(model).ask("refine", REFINE_PROMPT.format(
                question=state["question"], parent=parent, width=width,
                passages=numbered(state["passages"][node["question"]])))
            return [Reading(question=str(item["question"]), answer=str(item.get("answer", "")),
                            depth=node["depth"] + 1)
                    for item in json_list(reply.text)[:width]
                    if isinstance(item, dict) and item.get("question")]

        levels = await asyncio.gather(*(readings_of(node) for node in state["open"]))
        return {"open": [r for level in levels for r in level], "level": state["level"] + 1}

    async def prune(state: ClarificationState) -> dict[str, Any]:
        seen = {_key(r["question"]) for r in state["readings"]}
        fresh = []
        for reading in state["open"]:
            if _key(reading["question"]) not in seen:
                seen.add(_key(reading["question"]))
                fresh.append(reading)
        passages = [p for found in state["passages"].values() for p in found]

        async def accepted(reading: Reading) -> bool:
            reply = await ReasoningTrace(model).ask("verify", VERIFY_PROMPT.format(
                question=state["question"], reading=reading["question"],
                answer=reading["answer"], passages=numbered(list(dict.fromkeys(passages)))))
            return reply.text.strip().upper().startswith("YES")

        verdicts = await asyncio.gather(*(accepted(r) for r in fresh))
        kept = [r for r, ok in zip(fresh, verdicts, strict=True) if ok]
        return {"readings": state["readings"] + kept,
                "open": kept if state["level"] < depth else []}

    async def merge(state: ClarificationState) -> dict[str, Any]:
        readings = "\n".join(f"- {r['question']} {r['answer']}" for r in state["readings"])
        reply = await ReasoningTrace(model).ask("merge", MERGE_PROMPT.format(
            question=state["question"], readings=readings or "(none were found)"))
        return {"messages": [AIMessage(reply.text)]}

    async def after_prune(state: ClarificationState) -> str:
        return "retrieve" if state["open"] else "merge"

    builder = StateGraph(ClarificationState)
    for node in (retrieve, refine, prune, merge):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "retrieve")
    builder.add_edge("retrieve", "refine")
    builder.add_edge("refine", "prune")
    builder.add_conditional_edges("prune", after_prune, ["retrieve", "merge"])
    builder.add_edge("merge", END)
    return builder.compile(checkpointer=checkpointer, name=name)


def _key(question: str) -> str:
    return " ".join(re.findall(r"\w+", question.lower()))
