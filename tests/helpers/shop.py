"""Agents and a graph whose turns make model calls that are not the reply, for the tests of
streamed replies (in-process, over HTTP and at the CLI, which loads them from a file).

Every model here answers by a function of the messages it gets, so a turn gives the same reply
however often it is run: streamed and not, in different threads.
"""

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph

from ponder import Agent
from ponder.agents.planning import SelfConsistency
from ponder.memory.conversation import ConversationMemory
from ponder.testing import ScriptedChatModel, tool_calls

ANSWER = "We have 7 tins of Sencha."
NARRATION = "Let me check the stock."


def shop_reply(messages):
    """Text before a tool call; a tool that asks the model for SQL; summaries when asked."""
    system = messages[0].content if messages[0].type == "system" else ""
    if system.startswith("Summarise the conversation"):
        return "The customer keeps asking about tea stocks."
    if system.startswith("Write one SQL query"):
        return "SELECT count(*) FROM tins WHERE kind = 'sencha'"
    if messages[-1].type == "tool":
        return ANSWER
    return tool_calls(("stock", {"item": "sencha"}), content=NARRATION)


def shop_agent(checkpointer=False, tokens_per_second=2000.0) -> Agent:
    """Tools, one of which makes its own model call (as text-to-SQL does), and a conversation
    budget small enough that the second turn starts with a summary call."""
    model = ScriptedChatModel(replies=shop_reply, tokens_per_second=tokens_per_second)

    @tool
    async def stock(item: str) -> str:
        """How many tins of a tea are in stock."""
        sql = await model.ainvoke([SystemMessage("Write one SQL query for the question."),
                                   HumanMessage(f"How many tins of {item}?")])
        return "7" if "sencha" in sql.text else "0"

    return Agent("shop", model, tools=[stock], conversation=ConversationMemory(max_tokens=100),
                 checkpointer=checkpointer)


def thinker_agent(checkpointer=False) -> Agent:
    """A planner answers the turn; its samples are model calls that are not the reply."""
    def reply(messages):
        return "18" if messages[-1].content.endswith("is") else "thinking about it: 18"

    return Agent("thinker", ScriptedChatModel(replies=reply, tokens_per_second=2000),
                 planner=SelfConsistency(3, early_stop=False), checkpointer=checkpointer)


def stubborn_agent(checkpointer=False) -> Agent:
    """Narrates and calls a tool every step: the step limit's message is the reply."""
    @tool
    def look(place: str) -> str:
        """Look somewhere."""
        return "nothing"

    def reply(messages):
        return tool_calls(("look", {"place": "attic"}), content="Looking once more.")

    return Agent("stubborn", ScriptedChatModel(replies=reply, tokens_per_second=2000),
                 tools=[look], max_steps=1, checkpointer=checkpointer)


def plain_agent(checkpointer=False, tokens_per_second=2000.0) -> Agent:
    """No tools: its replies stream as they are written."""
    words = "Steady as she goes, captain, the wind is fair and the sea is calm."
    return Agent("plain", ScriptedChatModel(replies=lambda messages: words,
                                            tokens_per_second=tokens_per_second),
                 checkpointer=checkpointer)


def chatty_agent(checkpointer=False) -> Agent:
    """No tools, so its replies stream live; its second turn starts with a summary call."""
    def reply(messages):
        if messages[0].content.startswith("Summarise the conversation"):
            return "The user talks about tea a lot."
        return "Green tea keeps well in a dark tin."

    return Agent("chatty", ScriptedChatModel(replies=reply, tokens_per_second=2000),
                 conversation=ConversationMemory(max_tokens=100), checkpointer=checkpointer)


def drafting_graph(checkpointer=None):
    """A plain graph whose model writes a draft message, then a second node the answer."""
    model = ScriptedChatModel(replies=lambda messages: "A rough first draft.",
                              tokens_per_second=2000)

    async def draft(state: MessagesState):
        return {"messages": [await model.ainvoke(state["messages"])]}

    def answer(state: MessagesState):
        return {"messages": [("ai", "The polished answer.")]}

    builder = StateGraph(MessagesState)
    builder.add_node("draft", draft)
    builder.add_node("answer", answer)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "answer")
    return builder.compile(name="drafter", checkpointer=checkpointer)
