"""Functions -> LangChain tools, the one way ponder makes them: ``@tool(timeout_s=5,
max_concurrency=4, retries=2)``, and ``as_tool`` for whatever an agent is given.

The schema comes from the signature and the docstring (the model reads both). A sync function runs
in a worker thread; an async one on the loop. Each call is bounded by a timeout, the calls in
flight by a semaphore, and transient failures are retried with backoff. A tool made here bounds
its own calls, so an agent's action module adds no second timeout around it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from langchain_core.tools import BaseTool, StructuredTool
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ponder.config import ConfigurationError
from ponder.errors import PonderError

__all__ = ["BoundedTool", "ToolSource", "ToolTimeoutError", "as_tool", "tool"]


class ToolTimeoutError(PonderError, TimeoutError):
    """A call of a tool made by ``tool`` ran past its ``timeout_s`` (also a ``TimeoutError``)."""


class BoundedTool(StructuredTool):
    """A tool made by ``tool``: each call is bounded by ``timeout_s`` seconds (None: no bound),
    which the tool enforces itself, retries included. ``approval`` is whether a person approves
    a call before it runs: True, or a function of the call's arguments (a dict) that returns a
    bool; None or False: never (see ``ponder.agents.approval``)."""

    timeout_s: float | None = None
    approval: bool | Callable[[dict[str, Any]], bool] | None = None


@runtime_checkable
class ToolSource(Protocol):
    """Tools that depend on the conversation, given to an agent among its tools: an MCP
    server's (``ponder.tools.mcp.MCPServer``), listed for each thread when it runs."""

    name: str

    async def thread_tools(self, thread_id: str | None) -> list[BaseTool]:
        """The tools for ``thread_id`` now (empty when there are none to be had: never
        raises for a source that is unavailable)."""

    async def aclose(self) -> None:
        """Release what the source holds for threads (sessions, processes)."""


def tool(func: Callable[..., Any] | None = None, *, name: str | None = None,
         description: str | None = None, timeout_s: float | None = 30.0,
         max_concurrency: int | None = None, retries: int = 0,
         retry_on: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError),
         approval: bool | Callable[[dict[str, Any]], bool] | None = None) -> Any:
    """Decorate a function (``@tool`` or ``@tool(...)``) to make a LangChain tool (a BoundedTool).

    ``timeout_s`` bounds each attempt (None: no bound; ToolTimeoutError when it passes),
    ``max_concurrency`` the calls in flight, and ``retries`` the extra attempts after an
    exception of ``retry_on``, with exponential backoff. ``approval`` (True, or a function of
    the call's arguments returning a bool) makes an agent ask a person before each call it
    covers. Raises ConfigurationError for a function without a docstring (or ``description``),
    a bad limit or a bad approval policy.
    """
    if func is None:
        return functools.partial(tool, name=name, description=description, timeout_s=timeout_s,
                                 max_concurrency=max_concurrency, retries=retries,
                                 retry_on=retry_on, approval=approval)
    made = _make(func, name or getattr(func, "__name__", None), description, timeout_s,
                 max_concurrency, retries, retry_on)
    if approval is not None:
        if not (isinstance(approval, bool) or callable(approval)):
            raise ConfigurationError(
                f"tool {made.name!r}: approval is {approval!r}; use True, False or a function "
                "of the call's arguments that returns a bool")
        made.approval = approval
    return made


def as_tool(obj: BaseTool | Callable[..., Any], timeout_s: float | None = 30.0) -> BaseTool:
    """A LangChain tool as it is, or a plain (sync or async) function with a docstring made into
    one by ``tool``, each call bounded by ``timeout_s`` seconds. Raises ConfigurationError for
    anything else."""
    if isinstance(obj, BaseTool):
        return obj
    if not callable(obj):
        raise ConfigurationError(f"{obj!r} is not a tool: pass a LangChain tool or a function")
    return tool(obj, timeout_s=timeout_s)


def _make(func: Callable[..., Any], name: str | None, description: str | None,
          timeout_s: float | None, max_concurrency: int | None, retries: int,
          retry_on: tuple[type[BaseException], ...]) -> BaseTool:
    if not name:
        raise ConfigurationError(f"{func!r} has no __name__: pass name= to make it a tool")
    description = description or inspect.getdoc(func)
    if not description:
        raise ConfigurationError(
            f"the function {name!r} has no docstring: a tool needs a docstring or description=, "
            "because the model reads it to decide when to call the tool")
    if retries < 0 or (max_concurrency is not None and max_concurrency < 1):
        raise ConfigurationError(f"tool {name!r}: retries must be >= 0 and max_concurrency >= 1")
    if timeout_s is not None and timeout_s <= 0:
        raise ConfigurationError(f"tool {name!r}: timeout_s must be greater than zero, got "
                                 f"{timeout_s}")
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
            raise ToolTimeoutError(f"tool {name!r} timed out after {timeout_s:g} s") from None

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

    # The schema is LangChain's own, read through the wrapper from the function: its
    # arguments, with a RunnableConfig parameter or injected ones left to LangChain to fill.
    return BoundedTool.from_function(coroutine=run, name=name, description=description,
                                     timeout_s=timeout_s)
