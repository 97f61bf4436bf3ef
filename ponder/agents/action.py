"""The action module: the tool loop's tool side.

The tool calls of one model step run concurrently. A sync tool runs in a worker thread (LangChain's
``BaseTool.ainvoke`` does that), so it never blocks the event loop. Whatever goes wrong with a call
— an exception, a timeout, an unknown tool name, arguments that do not fit the schema, arguments
that are not even JSON — comes back to the model as an error ``ToolMessage`` it can react to.
Interrupts (``langgraph.types.interrupt``) pass through untouched.

In an agent's graph each tool call is a LangGraph task of its own (``tasks``: one ``Send`` per
call, as LangGraph's ``ToolNode`` is fanned out). That is what makes interrupts safe: LangGraph
saves the result of every task that finished, so when one call interrupts, the calls that
completed are not run again on resume, every interrupting call shows its own interrupt (with its
own id), and a resume value addressed to an interrupt id reaches that call alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal, NotRequired, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.errors import GraphBubbleUp
from langgraph.types import Send
from pydantic import ValidationError

from ponder.config import ConfigurationError
from ponder.tasks import gather_cancelling
from ponder.tools.toolkit import BoundedTool, ToolSource, ToolTimeoutError, as_tool

log = logging.getLogger("ponder.agents")


class ToolTask(TypedDict):
    """One task of a tool step, as the ``tools`` node receives it (the payload of a ``Send``).

    ``kind`` is ``"call"`` (run the tool call ``call``), ``"invalid"`` (answer the unparseable
    call ``call`` with an error) or ``"stop"`` (the step limit: answer every call of ``message``
    and end the turn).
    """

    kind: Literal["call", "invalid", "stop"]
    call: NotRequired[dict[str, Any]]
    message: NotRequired[AIMessage]


class ActionModule:
    """Runs the tool calls of one AI message, concurrently, and bounds the steps of a turn.

    ``tools`` are LangChain tools, plain functions with a docstring (made into tools by
    ``ponder.tools.tool``, bounded by ``timeout_s``), or ToolSources (MCP servers) whose tools
    are listed per thread (``tools_for``). A call of a tool that does not bound its
    own calls is cut after ``timeout_s`` seconds; one made by ``ponder.tools.tool`` keeps its own
    bound. A turn takes at most ``max_steps`` tool steps.
    """

    def __init__(self, tools: Sequence[BaseTool | ToolSource | Callable[..., Any]] = (), *,
                 timeout_s: float = 30.0, max_steps: int = 10) -> None:
        if max_steps < 1:
            raise ConfigurationError(f"max_steps must be at least 1, got {max_steps}")
        if timeout_s <= 0:
            raise ConfigurationError(f"tool_timeout_s must be greater than zero, got {timeout_s}")
        self.sources = [t for t in tools if isinstance(t, ToolSource)]
        if len({s.name for s in self.sources}) != len(self.sources):
            raise ConfigurationError("two tool sources (MCP servers) share a name: rename one")
        # A plain function becomes a tool bounded by timeout_s itself (ponder.tools.tool).
        self.tools = [as_tool(t, timeout_s) for t in tools if not isinstance(t, ToolSource)]
        self.by_name = {t.name: t for t in self.tools}
        if len(self.by_name) != len(self.tools):
            names = [t.name for t in self.tools]
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ConfigurationError(f"two tools share the name {', '.join(twice)}: rename one")
        self.timeout_s = timeout_s
        self.max_steps = max_steps
        self._shadowed: set[tuple[str, str]] = set()  # (source, tool) left out, warned once

    async def tools_for(self, config: RunnableConfig | None) -> list[BaseTool]:
        """The tools of a step in the thread of ``config``: ``tools``, then each source's tools
        for the thread (listed concurrently; a name already taken is left out, with a
        warning)."""
        if not self.sources:
            return self.tools
        thread_id = (config or {}).get("configurable", {}).get("thread_id")
        listed = await asyncio.gather(*(s.thread_tools(thread_id) for s in self.sources))
        tools, names = list(self.tools), set(self.by_name)
        for source, found in zip(self.sources, listed, strict=True):
            for tool in found:
                if tool.name in names:
                    if (source.name, tool.name) in self._shadowed:
                        continue
                    self._shadowed.add((source.name, tool.name))
                    log.warning("tool %r of %r is left out: another tool has that name (an "
                                "MCP server's tool_name_prefix=True avoids that)", tool.name,
                                source.name)
                    continue
                names.add(tool.name)
                tools.append(tool)
        return tools

    async def aclose(self) -> None:
        """Close the tool sources' sessions (an MCP server's processes end)."""
        await asyncio.gather(*(s.aclose() for s in self.sources))

    def tasks(self, node: str, messages: Sequence[AnyMessage]) -> list[Send]:
        """The tool step that answers the last message of ``messages``, as LangGraph tasks for
        ``node``: one per tool call (LangGraph runs them concurrently and checkpoints each one's
        result on its own), or one that ends the turn once the step limit is passed.

        Empty when the message has nothing to answer (no calls, or only unparseable calls
        without an id).
        """
        message = messages[-1]
        if not (isinstance(message, AIMessage) and
                (message.tool_calls or message.invalid_tool_calls)):
            return []
        if self.steps_taken(messages) > self.max_steps:
            return [Send(node, ToolTask(kind="stop", message=message))]
        return ([Send(node, ToolTask(kind="call", call=c)) for c in message.tool_calls] +
                [Send(node, ToolTask(kind="invalid", call=c))
                 for c in message.invalid_tool_calls if c.get("id")])

    async def execute(self, task: ToolTask, config: RunnableConfig | None = None
                      ) -> list[AnyMessage]:
        """The messages that answer one task from ``tasks``."""
        if task["kind"] == "call":
            return [await self._call(task["call"], config)]
        if task["kind"] == "invalid":
            return [_invalid_call(task["call"])]
        return self.stop(task["message"])

    async def run(self, message: AIMessage, config: RunnableConfig | None = None
                  ) -> list[ToolMessage]:
        """One ToolMessage per tool call of ``message``, in the order of the calls, run inside
        the caller's own node (a planner's tool loop).

        Inside one node LangGraph cannot keep the result of a call that finished while another
        interrupted: the whole node runs again on resume. So an interrupt in one call cancels
        the others rather than let them finish now and run again. An agent's own tool loop
        runs each call as a task of its own instead (``tasks``), where neither happens.
        """
        calls = [self._call(c, config) for c in message.tool_calls]
        if len(calls) == 1:  # one call needs no task of its own
            results = [await calls[0]]
        else:
            results = await gather_cancelling(*calls)
        results += [_invalid_call(c) for c in message.invalid_tool_calls if c.get("id")]
        return results

    async def _call(self, call: dict, config: RunnableConfig | None) -> ToolMessage:
        name, call_id = call["name"], call["id"]
        tool, known = self.by_name.get(name), self.by_name
        if tool is None and self.sources:  # the thread's tools now: a session may be new
            known = {t.name: t for t in await self.tools_for(config)}
            tool = known.get(name)
        if tool is None:
            known = ", ".join(sorted(known)) or "none"
            return _error(call, f"there is no tool named {name!r}. Available tools: {known}.")
        # A tool made by ponder.tools.tool bounds its own calls (its timeout_s, per retry); only
        # other tools get the module's bound, so no call is timed twice.
        limit = None if isinstance(tool, BoundedTool) else self.timeout_s
        try:
            async with asyncio.timeout(limit):
                result = await tool.ainvoke({**call, "type": "tool_call"}, config)
        except GraphBubbleUp:
            raise  # an interrupt or a parent command: LangGraph handles those
        except ToolTimeoutError as exc:
            return _error(call, f"{exc}.")
        except TimeoutError:
            return _error(call, f"tool {name!r} timed out after {self.timeout_s:g} s.")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            return _error(call, f"invalid arguments for tool {name!r}: {problems}. "
                                "Call it again with arguments that match its schema.")
        except Exception as exc:
            return _error(call, f"tool {name!r} failed: {type(exc).__name__}: {exc}")
        if isinstance(result, ToolMessage):
            return result
        return ToolMessage(content=str(result), tool_call_id=call_id, name=name)

    def steps_taken(self, messages: Sequence[AnyMessage]) -> int:
        """Tool steps since the turn's last human message (derived: no extra state to keep)."""
        steps = 0
        for message in reversed(messages):
            if isinstance(message, HumanMessage):
                break
            if isinstance(message, AIMessage) and (message.tool_calls or
                                                   message.invalid_tool_calls):
                steps += 1
        return steps

    def stop(self, message: AIMessage) -> list[AnyMessage]:
        """End a turn at the step limit: answer the pending calls, then say why it stopped."""
        unanswered = [
            ToolMessage(content="Not run: the step limit of this turn was reached.",
                        tool_call_id=c["id"], name=c["name"], status="error")
            for c in message.tool_calls
        ] + [_invalid_call(c) for c in message.invalid_tool_calls if c.get("id")]
        return [*unanswered, AIMessage(content=(
            f"I stopped after {self.max_steps} tool steps without reaching an answer "
            f"(max_steps={self.max_steps}). Ask again with a narrower question, or raise "
            "max_steps."
        ))]


def _error(call: dict, text: str) -> ToolMessage:
    return ToolMessage(content=f"Error: {text}", tool_call_id=call["id"], name=call["name"],
                       status="error")


def _invalid_call(call: dict) -> ToolMessage:
    return ToolMessage(
        content=(f"Error: the arguments for tool {call.get('name')!r} are not valid JSON "
                 f"({call.get('error') or 'unparseable'}): {call.get('args')!r}. "
                 "Send the call again with a JSON object."),
        tool_call_id=call["id"], name=call.get("name") or "unknown", status="error",
    )
