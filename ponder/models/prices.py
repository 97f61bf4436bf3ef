"""What a model call costs, in US dollars, from genai-prices (pydantic's maintained price table,
shipped inside the package: no network): ``cost_usd("openai", "gpt-4o-mini", 1000, 200)``.

A model is priced when genai-prices knows its provider (LangChain's provider names are mapped to
genai-prices' ids) and the model under it; anything else (a local Ollama model, a test model,
an OpenAI-compatible server behind ``openai:<its own name>``) has no price: None, never a guess.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from decimal import Decimal

# LangChain's provider names (init_chat_model's) where genai-prices names the provider otherwise.
_PROVIDER_IDS = {
    "google_genai": "google", "google_vertexai": "google", "mistralai": "mistral",
    "xai": "x-ai", "azure_openai": "azure", "bedrock": "aws", "bedrock_converse": "aws",
    "anthropic_bedrock": "aws",
}
_PER = 1000


@dataclass(frozen=True)
class Price:
    """A model's price in USD per token: ``input`` (prompt) and ``output`` (completion)."""

    input: Decimal
    output: Decimal

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """The cost in USD of ``input_tokens`` in and ``output_tokens`` out."""
        return float(self.input * input_tokens + self.output * output_tokens)


@functools.cache
def price(provider: str, model: str) -> Price | None:
    """The price of ``provider``'s ``model`` (e.g. "openai", "gpt-4o-mini") now; None when
    genai-prices does not know the provider or the model under it. The first call loads the
    table (a fraction of a second): async code calls ``load_price`` instead."""
    from genai_prices import Usage, calc_price

    try:
        # A thousand tokens each way gives both per-token prices at once, at the base tier of
        # a tiered price (tiers start at many thousands of input tokens).
        calc = calc_price(Usage(input_tokens=_PER, output_tokens=_PER), model,
                          provider_id=_PROVIDER_IDS.get(provider, provider))
    except LookupError:
        return None
    return Price(calc.input_price / _PER, calc.output_price / _PER)


async def load_price(provider: str, model: str) -> Price | None:
    """``price`` without blocking the event loop: the table is loaded, once, on a thread."""
    if price.cache_info().currsize == 0:
        return await asyncio.to_thread(price, provider, model)
    return price(provider, model)


def cost_usd(provider: str, model: str, input_tokens: int, output_tokens: int) -> float | None:
    """What a call of ``provider``'s ``model`` with these token counts cost, in USD; None when
    the model has no known price."""
    known = price(provider, model)
    return None if known is None else known.cost_usd(input_tokens, output_tokens)
