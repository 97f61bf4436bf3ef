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

A call that needs a person's approval (``ponder.agents.approval``) is two tasks: the first asks
(an interrupt) and ends with the decision, which LangGraph saves with the step; the call then
runs as a task of the next step, whose result is saved as soon as it finishes. So (with the
agent's default durability, ``"sync"``) a call runs only once it is approved, never twice once
it finished, and, after a crash while it ran, again only if it had not finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal, NotRequired, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.errors import GraphBubbleUp
from langgraph.types import Command, Send, interrupt
from pydantic import ValidationError

from ponder.agents import approval
from ponder.config import ConfigurationError
from ponder.tasks import gather_cancelling
from ponder.tools.toolkit import BoundedTool, ToolSource, ToolTimeoutError, as_tool

log = logging.getLogger("ponder.agents")


class ToolTask(TypedDict):
    """One task of a tool step, as the ``tools`` node receives it (the payload of a ``Send``).

    ``kind`` is ``"call"`` (run the tool call ``call``), ``"approval"`` (ask a person about
    ``call``, then run it as a ``"call"`` task of the next step, or answer it with the
    rejection), ``"invalid"`` (answer the unparseable call ``call`` with an error) or ``"stop"``
    (the step limit: answer every call of ``message`` and end the turn).
    """

    kind: Literal["call", "approval", "invalid", "stop"]
    call: NotRequired[dict[str, Any]]
    message: NotRequired[AIMessage]


class ActionModule:
    """Runs the tool calls of one AI message, concurrently, and bounds the steps of a turn.

    ``tools`` are LangChain tools, plain functions with a docstring (made into tools by
    ``ponder.tools.tool``, bounded by ``timeout_s``), or ToolSources (MCP servers) whose tools
    are listed per thread (``tools_for``). A call of a tool that does not bound its
    own calls is cut after ``timeout_s`` seconds; one made by ``ponder.tools.tool`` keeps its own
    bound. A turn takes at most ``max_steps`` tool steps. ``approve`` maps tool names to approval
    policies (True, False, or a function of a call's arguments returning a bool) over the tools'
    own (``ponder.agents.approval``; an MCP tool marked ``destructiveHint`` needs approval);
    ConfigurationError for a name no tool has (names are checked once the tools are known: a
    source's tools are listed per thread).
    """

    def __init__(self, tools: Sequence[BaseTool | ToolSource | Callable[..., Any]] = (), *,
                 timeout_s: float = 30.0, max_steps: int = 10,
                 approve: Mapping[str, approval.Policy] | None = None) -> None:
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
        if not self.sources and (unknown := sorted(set(approve or {}) - set(self.by_name))):
            raise ConfigurationError(
                f"approve names {', '.join(map(repr, unknown))}, which is no tool of this agent: "
                f"its tools are {', '.join(sorted(self.by_name)) or 'none'}")
        self._approve = {n: approval.check_policy(n, p) for n, p in (approve or {}).items()}
        policies = {t.name: approval.tool_policy(t) for t in self.tools}
        policies.update(self._approve)
        # Only the tools that may need approval: none (and no sources), and the graph has no
        # approval step.
        self.policies = {n: p for n, p in policies.items() if p is not None and p is not False}
        self._listed: dict[str, BaseTool] = {}  # the sources' tools, as last listed

    def needs_approval(self, call: dict[str, Any], allowed: Collection[str] = ()) -> bool:
        """Whether a person approves ``call`` (a LangChain tool call) before it runs, ``allowed``
        being the tools allowed for the whole thread."""
        name = call["name"]
        if name in allowed:
            return False
        policy = self.policies.get(name)
        if name not in self.by_name and name not in self._approve and name in self._listed:
            policy = approval.tool_policy(self._listed[name])  # an MCP tool's annotations
        return approval.needs_approval(policy, name, call.get("args") or {})

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
                self._listed[tool.name] = tool
        return tools

    async def aclose(self) -> None:
        """Close the tool sources' sessions (an MCP server's processes end)."""
        await asyncio.gather(*(s.aclose() for s in self.sources))

    def tasks(self, node: str, messages: Sequence[AnyMessage], allowed: Collection[str] = ()
              ) -> list[Send]:
        """The tool step that answers the last message of ``messages``, as LangGraph tasks for
        ``node``: one per tool call (LangGraph runs them concurrently and checkpoints each one's
        result on its own; a call that needs approval asks first), or one that ends the turn
        once the step limit is passed. ``allowed``: the tools allowed for the whole thread.

        Empty when the message has nothing to answer (no calls, or only unparseable calls
        without an id).
        """
        message = messages[-1]
        if not (isinstance(message, AIMessage) and
                (message.tool_calls or message.invalid_tool_calls)):
            return []
        if self.steps_taken(messages) > self.max_steps:
            return [Send(node, ToolTask(kind="stop", message=message))]
        return ([Send(node, ToolTask(kind="approval" if self.needs_approval(c, allowed)
                                     else "call", call=c)) for c in message.tool_calls] +
                [Send(node, ToolTask(kind="invalid", call=c))
                 for c in message.invalid_tool_calls if c.get("id")])

    async def execute(self, task: ToolTask, config: RunnableConfig | None = None
                      ) -> list[AnyMessage] | Command:
        """The messages that answer one task from ``tasks``; for an ``"approval"`` task, the
        ``Command`` that goes on once the person decided (see ``review``)."""
        if task["kind"] == "approval":
            return self.review(task["call"])
        if task["kind"] == "call":
            return [await self._call(task["call"], config)]
        if task["kind"] == "invalid":
            return [_invalid_call(task["call"])]
        return self.stop(task["message"])

    def review(self, call: dict[str, Any], node: str = "tools") -> Command:
        """Ask a person about ``call`` (an interrupt per question; asked again, with the
        problem, after an answer that is not a decision or edited arguments that do not fit the
        tool's schema) and go on: an approved or edited call runs as a task of ``node`` in the
        next step; a rejected one is answered with the person's message. ``always`` adds the
        tool to the state's ``allowed_tools``."""
        decided = self.decide(call)
        update: dict[str, Any] = {"allowed_tools": [call["name"]]} if decided["always"] else {}
        if decided["decision"] == "reject":
            return Command(update={**update, "messages": [_rejected(call, decided)]})
        approved = {**call, "args": decided["args"]}
        return Command(update=update, goto=[Send(node, ToolTask(kind="call", call=approved))])

    def decide(self, call: dict[str, Any]) -> approval.Decision:
        """The person's decision on ``call``, asked with ``interrupt`` until it is one."""
        tool = self.by_name.get(call["name"]) or self._listed.get(call["name"])
        error = None
        while True:
            answer = interrupt(approval.request(call, tool, error))
            try:
                decided = approval.check_answer(answer, dict(call.get("args") or {}))
                if decided["decision"] == "edit" and tool is not None:
                    approval.check_args(tool, decided["args"])
                return decided
            except approval.ApprovalError as exc:
                error = str(exc)  # asked again (a new interrupt, with an id of its own)

    async def run(self, message: AIMessage, config: RunnableConfig | None = None
                  ) -> list[ToolMessage]:
        """One ToolMessage per tool call of ``message``, in the order of the calls, run inside
        the caller's own node (a planner's tool loop).

        Inside one node LangGraph cannot keep the result of a call that finished while another
        interrupted: the whole node runs again on resume. So an interrupt in one call cancels
        the others rather than let them finish now and run again. An agent's own tool loop
        runs each call as a task of its own instead (``tasks``), where neither happens.

        Calls that need approval are asked about first, one after another, and the calls run
        only once every question is answered: a node runs again from its start on resume.
        """
        plan: list[dict | ToolMessage] = []  # per call: the call to run, or its answer
        for call in message.tool_calls:
            if not self.needs_approval(call):
                plan.append(call)
                continue
            decided = self.decide(call)
            plan.append(_rejected(call, decided) if decided["decision"] == "reject"
                        else {**call, "args": decided["args"]})
        calls = [self._call(c, config) for c in plan if not isinstance(c, ToolMessage)]
        if len(calls) <= 1:  # one call needs no task of its own
            ran = iter([await c for c in calls])
        else:
            ran = iter(await gather_cancelling(*calls))
        results = [c if isinstance(c, ToolMessage) else next(ran) for c in plan]
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


def _rejected(call: dict, decided: approval.Decision) -> ToolMessage:
    return ToolMessage(
        content=decided["message"] or f"The person did not approve this call of "
                                      f"{call['name']!r}: it was not run.",
        tool_call_id=call["id"], name=call["name"], status="error")
