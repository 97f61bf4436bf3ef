"""The tool decorator: schema from the signature, threads for sync code, timeouts, limits,
retries."""

import asyncio
import threading

import pytest

from ponder.config import ConfigurationError
from ponder.errors import PonderError
from ponder.tools.toolkit import BoundedTool, ToolTimeoutError, as_tool, tool
from tests.helpers.concurrency import Rendezvous


async def test_schema_and_description_come_from_the_function():
    @tool
    def convert(amount: float, currency: str = "EUR") -> str:
        """Convert an amount of US dollars into another currency."""
        return f"{amount * 2} {currency}"

    assert convert.name == "convert"
    assert convert.description == "Convert an amount of US dollars into another currency."
    schema = convert.args_schema.model_json_schema()
    assert set(schema["properties"]) == {"amount", "currency"} and schema["required"] == ["amount"]
    assert await convert.ainvoke({"amount": 1.5}) == "3.0 EUR"


async def test_sync_functions_run_in_a_worker_thread():
    seen, ticked = [], threading.Event()

    @tool
    def where() -> str:
        """Report the thread, once the event loop has ticked while this blocks."""
        seen.append(threading.current_thread() is threading.main_thread())
        # On the loop itself, the ticks could not happen while it waits.
        return "ok" if ticked.wait(timeout=30) else "the loop was blocked"

    async def heartbeat():
        for _ in range(10):
            await asyncio.sleep(0.01)
        ticked.set()

    beat = asyncio.create_task(heartbeat())
    assert await where.ainvoke({}) == "ok"  # the loop kept running meanwhile
    await beat
    assert seen == [False]


async def test_timeout_limit_and_retries():
    @tool(timeout_s=0.1)
    async def slow() -> str:
        """Too slow."""
        await asyncio.sleep(5)
        return "never"

    with pytest.raises(TimeoutError, match="timed out after 0.1 s"):
        await slow.ainvoke({})

    running, peak = 0, 0
    first_two = Rendezvous(2)  # the cap is reached however slowly the calls start

    @tool(max_concurrency=2)
    async def busy(i: int) -> int:
        """Busy."""
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await first_two.meet()
        await asyncio.sleep(0.05)
        running -= 1
        return i

    assert await asyncio.gather(*(busy.ainvoke({"i": i}) for i in range(6))) == list(range(6))
    assert peak == 2

    calls = 0

    @tool(retries=2)
    async def flaky() -> str:
        """Fails twice, then works."""
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("reset")
        return "third time"

    assert await flaky.ainvoke({}) == "third time" and calls == 3


def test_a_tool_needs_a_description():
    with pytest.raises(ConfigurationError, match="needs a docstring"):
        @tool
        def mystery(x: int) -> int:
            return x


async def test_as_tool_makes_functions_with_tool_and_keeps_tools():
    def stock(item: str) -> int:
        """Units of an item in stock."""
        return 7

    made = as_tool(stock, timeout_s=5)
    assert isinstance(made, BoundedTool) and made.timeout_s == 5
    assert await made.ainvoke({"item": "tea"}) == 7
    assert as_tool(made) is made
    with pytest.raises(ConfigurationError, match="is not a tool"):
        as_tool("stock")
    with pytest.raises(ConfigurationError, match="has no docstring"):
        as_tool(lambda: 1)


async def test_a_tools_own_timeout_is_a_ponder_error_and_a_timeout_error():
    @tool(timeout_s=0.05)
    async def slow() -> str:
        """Too slow."""
        await asyncio.sleep(5)
        return "never"

    with pytest.raises(ToolTimeoutError) as caught:
        await slow.ainvoke({})
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, PonderError)
