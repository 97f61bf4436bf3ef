"""Make a safe tool from a function: ``@tool(timeout_s=5, max_concurrency=4, retries=2)``.

The schema comes from the signature and the docstring (the model reads both). A sync function runs
in a worker thread; an async one on the loop. Each call is bounded by a timeout, the calls in
flight by a semaphore, and transient failures are retried with backoff.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.tools.base import create_schema_from_function
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ponder.config import ConfigurationError

__all__ = ["tool"]


def tool(func: Callable[..., Any] | None = None, *, name: str | None = None,
         description: str | None = None, timeout_s: float | None = 30.0,
         max_concurrency: int | None = None, retries: int = 0,
         retry_on: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
         ) -> Any:
    """Decorate a function (``@tool`` or ``@tool(...)``) to make a LangChain tool."""
    if func is None:
        return functools.partial(tool, name=name, description=description, timeout_s=timeout_s,
                                 max_concurrency=max_concurrency, retries=retries,
                                 retry_on=retry_on)
    return _make(func, name or func.__name__, description, timeout_s, max_concurrency, retries,
                 retry_on)


def _make(func: Callable[..., Any], name: str, description: str | None,
          timeout_s: float | None, max_concurrency: int | None, retries: int,
          retry_on: tuple[type[BaseException], ...]) -> BaseTool:
    description = description or inspect.getdoc(func)
    if not description:
        raise ConfigurationError(f"the tool {name!r} needs a docstring or description=: the "
                                 "model reads it to decide when to call the tool")
    if retries < 0 or (max_concurrency is not None and max_concurrency < 1):
        raise ConfigurationError(f"tool {name!r}: retries must be >= 0 and max_concurrency >= 1")
    is_async = inspect.iscoroutinefunction(func)
    gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    async def once(**kwargs: Any) -> Any:
        call = func(**kwargs) if is_async else asyncio.to_thread(func, **kwargs)
        if timeout_s is None:
            return await call
        try:
            async with asyncio.timeout(timeout_s):
                return await call
        except TimeoutError:
            raise TimeoutError(f"tool {name!r} timed out after {timeout_s:g} s") from None

    @functools.wraps(func)
    async def run(**kwargs: Any) -> Any:
        attempts = AsyncRetrying(stop=stop_after_attempt(retries + 1),
                                 wait=wait_exponential(multiplier=0.2, max=5),
                                 retry=retry_if_exception_type(retry_on), reraise=True)
        async for attempt in attempts:
            with attempt:
                if gate is None:
                    return await once(**kwargs)
                async with gate:
                    return await once(**kwargs)

    return StructuredTool.from_function(
        coroutine=run, name=name, description=description,
        args_schema=create_schema_from_function(name, func, parse_docstring=False),
    )
