"""The example agent behind ``ponder demo``: a tea shop's assistant.

It shows every part of a turn: a profile, a knowledge source (the shop handbook) recalled
before acting, a tool (the calculator), and a thread persisted in the database, so the second
question can be answered from the first. Without a configured model it runs on a scripted model
that reads the recalled handbook and the thread like a model would, so the whole flow runs offline.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, ToolMessage

from ponder.agents.agent import Agent
from ponder.agents.profile import Profile
from ponder.memory.knowledge import Document, KnowledgeBase
from ponder.models import ResilientChatModel
from ponder.testing import ScriptedChatModel, tool_calls
from ponder.tools.builtin import calculator

HANDBOOK = """\
Sencha costs $12.50 per tin. It is a green tea from Shizuoka, steeped at 75 C for one minute.

Assam costs $9.80 per tin. It is a malty black tea; steep it at 95 C for four minutes.

Shipping costs $4.90 per order, whatever its size. Orders over $60 ship free.

Returns are accepted within 30 days for unopened tins.
"""

QUESTIONS = ("How much are 3 tins of Sencha, shipping included?", "What did I just ask you?")

PROFILE = Profile(
    role="the assistant of Lumen Tea, a small tea shop",
    goal="answer customers' questions about teas, prices and orders accurately",
    instructions=("Quote prices from the shop handbook.",
                  "Use the calculator for every total; never do arithmetic in your head."),
    constraints=("Never invent a price that is not in the handbook.",),
    output_style="one or two friendly sentences",
)


def demo_agent(model: BaseChatModel | str | None = None, **options) -> Agent:
    """The tea shop agent on ``model`` (default: the offline scripted model). Its knowledge base
    (word search, so no embedding model is needed) lives in ``PONDER_DATABASE_URL``."""
    handbook = [Document(text, f"handbook#{i}", "Lumen Tea handbook")
                for i, text in enumerate(HANDBOOK.strip().split("\n\n"), 1)]
    knowledge = KnowledgeBase(name="demo", sources=handbook, k=4)
    return Agent("tea-guide", model or scripted_model(), PROFILE, memory=knowledge,
                 tools=[calculator], **options)


def scripted_model() -> ResilientChatModel:
    """The demo's offline model: scripted replies from what the messages hold (the recalled
    handbook, the thread, tool results), behind the same resilience policy as a provider's model."""
    # Behind the same policy as a provider's model, so usage is recorded the same way.
    return ResilientChatModel(inner=ScriptedChatModel(replies=_reply), provider="scripted",
                              model_name="tea-guide")


_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "a": 1, "an": 1}


def _reply(messages: Sequence[BaseMessage]):
    """Answer from what the messages hold: the recalled handbook, the thread, tool results."""
    system = next((m.content for m in messages if isinstance(m, SystemMessage)), "")
    humans = [m.content for m in messages if isinstance(m, HumanMessage)]
    question = humans[-1] if humans else ""
    last = messages[-1]
    if isinstance(last, ToolMessage):
        return f"That comes to ${float(last.content):.2f}, shipping included."
    if re.search(r"what did i (just )?ask", question, re.I):
        if len(humans) < 2:
            return "This is the first thing you asked me in this conversation."
        return f"You asked: \"{humans[-2]}\""
    wanted = re.search(r"(\d+|one|two|three|four|five|an?)\s+tins? of (\w+)", question, re.I)
    if wanted:
        count = int(wanted[1]) if wanted[1].isdigit() else _NUMBERS[wanted[1].lower()]
        tea = wanted[2].capitalize()
        price = re.search(rf"{tea} costs \$(\d+\.\d+)", system)
        shipping = re.search(r"Shipping costs \$(\d+\.\d+)", system)
        if price is None:
            return f"I could not find the price of {tea} in the handbook."
        expression = f"{count} * {price[1]}" + (f" + {shipping[1]}" if shipping else "")
        return tool_calls(("calculator", {"expression": expression}))
    return "I can help with our teas, prices, shipping and returns."
