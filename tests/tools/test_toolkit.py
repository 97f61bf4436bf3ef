"""The tool decorator: schema from the signature, threads for sync code, timeouts, limits,
retries."""

import asyncio
import threading
import time

import pytest

from ponder.config import ConfigurationError
from ponder.tools.toolkit import tool


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
    seen = []

    @tool
    def where() -> str:
        """Report the thread."""
        seen.append(threading.current_thread() is threading.main_thread())
        time.sleep(0.2)
        return "ok"

    ticks = 0

    async def heartbeat():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.create_task(heartbeat())
    await where.ainvoke({})
    beat.cancel()
    assert seen == [False] and ticks >= 10  # the loop kept running meanwhile


async def test_timeout_limit_and_retries():
    @tool(timeout_s=0.1)
    async def slow() -> str:
        """Too slow."""
        await asyncio.sleep(5)
        return "never"

    with pytest.raises(TimeoutError, match="timed out after 0.1 s"):
        await slow.ainvoke({})

    running, peak = 0, 0

    @tool(max_concurrency=2)
    async def busy(i: int) -> int:
        """Busy."""
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
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
