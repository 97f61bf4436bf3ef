"""Models whose every call costs the same, so a turn's cost tells how many calls it made; and an
agent whose planner makes ten of them."""

from langchain_core.messages import AIMessage

from ponder import Agent
from ponder.agents.planning import SelfConsistency
from ponder.testing import ScriptedChatModel

# Every call costs the same, so a turn's cost is 7 times the calls its model received.
PRICE = {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}


def priced(reply: str | AIMessage) -> AIMessage:
    message = AIMessage(reply) if isinstance(reply, str) else reply
    return message.model_copy(update={"usage_metadata": PRICE})


def thinker_model() -> ScriptedChatModel:
    """Zero-Shot-CoT: a reasoning call, then an extraction call per sampled path."""
    def reply(messages):
        return priced("18" if messages[-1].content.endswith("is") else "thinking: 18")
    return ScriptedChatModel(replies=reply)


def thinker(checkpointer=False) -> Agent:
    return Agent("thinker", thinker_model(), checkpointer=checkpointer,
                 planner=SelfConsistency(k=5, early_stop=False))


# A model genai-prices knows, so its calls have a price (served by a FakeOpenAIServer).
PRICED_MODEL = "gpt-4o-mini"


def dollars(input_tokens: int, output_tokens: int, model: str = PRICED_MODEL) -> float:
    """What genai-prices says a call of ``model`` with these tokens costs (OpenAI's prices)."""
    from genai_prices import Usage, calc_price

    return float(calc_price(Usage(input_tokens=input_tokens, output_tokens=output_tokens),
                            model, provider_id="openai").total_price)
