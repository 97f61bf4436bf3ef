"""Multi-hop retrieval in the DSP style (Demonstrate-Search-Predict, Khattab et al. 2022):
decompose a question into a search query per hop, each written knowing what the earlier hops
found; retrieve per hop; predict the answer from everything retrieved, citing passages.

    graph = multi_hop(model, knowledge_base, hops=2)
    state = await graph.ainvoke({"messages": [("user", "Which country was Ada born in?")]})

``retriever`` is a ``KnowledgeBase`` (its full pipeline: enhancement, reranking) or any
LangChain retriever.
"""

from __future__ import annotations

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
from ponder.models import as_chat_model

FIRST_QUERY_PROMPT = """Answering this question may take several searches, each building on \
the last. Write the search query for the first thing to look up. Reply with the query only.

Question: {question}"""

NEXT_QUERY_PROMPT = """Question: {question}

What the searches so far found:
{context}

Write the search query for what is still missing to answer the question. Reply with the query \
only, or DONE if the passages above are enough."""

PREDICT_PROMPT = """Answer the question from the passages. Cite the passages you use as [1], \
[2], ... If they do not contain the answer, say so.

Passages:
{context}

Question: {question}"""


class MultiHopState(TypedDict):
    """The state of ``multi_hop``: the conversation, the question, each hop's query and the
    passages."""
    messages: Annotated[list[AnyMessage], add_messages]
    question: NotRequired[str]
    queries: NotRequired[list[str]]
    passages: NotRequired[list[str]]  # every hop's, without repeats, in the order found
    searching: NotRequired[bool]      # False once the model says the passages suffice


def multi_hop(model: BaseChatModel | str, retriever: KnowledgeBase | BaseRetriever, *,
              hops: int = 2, k: int = 3, checkpointer: BaseCheckpointSaver | None = None,
              name: str = "multi_hop") -> CompiledStateGraph:
    """A graph that answers a question needing several lookups: query, retrieve, repeat, predict.

    DSP multi-hop: Khattab et al. 2022, "Demonstrate-Search-Predict: Composing retrieval and
    language models for knowledge-intensive NLP". At most ``hops`` queries, each one model call and
    ``k`` passages (new ones kept, in the order found); after the first hop the model may say DONE
    instead of a query. One last call answers from the numbered passages, as the turn's AIMessage.
    ``retriever`` is a KnowledgeBase (its full pipeline) or any LangChain retriever. Raises
    ValueError when ``hops`` is below 1.
    """
    if hops < 1:
        raise ValueError(f"hops must be at least 1, got {hops}")
    model = as_chat_model(model)

    async def query(state: MultiHopState) -> dict[str, Any]:
        question = question_of(state)
        fresh = state.get("question") != question  # a new turn of the thread starts over
        queries = [] if fresh else state.get("queries", [])
        passages = [] if fresh else state.get("passages", [])
        prompt = (NEXT_QUERY_PROMPT.format(question=question, context=numbered(passages))
                  if queries else FIRST_QUERY_PROMPT.format(question=question))
        reply = (await ReasoningTrace(model).ask("query", prompt)).text.strip().strip('"')
        done = bool(queries) and (not reply or reply.upper().startswith("DONE"))
        return {"question": question, "passages": passages, "searching": not done,
                "queries": queries if done else [*queries, reply or question]}

    async def retrieve(state: MultiHopState) -> dict[str, Any]:
        found = await search(retriever, state["queries"][-1], k)
        passages = state["passages"]
        return {"passages": passages + [p for p in dict.fromkeys(found) if p not in passages]}

    async def predict(state: MultiHopState) -> dict[str, Any]:
        reply = await ReasoningTrace(model).ask("predict", PREDICT_PROMPT.format(
            context=numbered(state["passages"]), question=state["question"]))
        return {"messages": [AIMessage(reply.text)]}

    async def after_query(state: MultiHopState) -> str:
        return "retrieve" if state["searching"] else "predict"

    async def after_retrieve(state: MultiHopState) -> str:
        return "query" if len(state["queries"]) < hops else "predict"

    builder = StateGraph(MultiHopState)
    for node in (query, retrieve, predict):
        builder.add_node(node.__name__, node)
    builder.add_edge(START, "query")
    builder.add_conditional_edges("query", after_query, ["retrieve", "predict"])
    builder.add_conditional_edges("retrieve", after_retrieve, ["query", "predict"])
    builder.add_edge("predict", END)
    return builder.compile(checkpointer=checkpointer, name=name)
