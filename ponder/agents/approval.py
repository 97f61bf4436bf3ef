"""Tool approval: which tool calls a person approves before they run, what the person is asked,
and what the answers mean (the human-in-the-loop terms of LangChain's middleware: approve, edit,
reject).

A policy says whether a call needs approval: ``True``, ``False``, or a callable given the call's
arguments (a dict) that returns a bool. A tool's own policy is ``@tool(approval=...)``; a tool
an MCP server marks destructive (``destructiveHint`` in its ``metadata``, as
``langchain-mcp-adapters`` puts it) needs approval unless told otherwise; ``Agent(approve={name:
policy})`` overrides both. A policy function is asked when the model's step is routed, on the
event loop: keep it a quick check of the arguments.

A call that needs approval interrupts (LangGraph's ``interrupt``) with a request::

    {"id": tool_call_id, "tool": name, "args": {...}, "description": "...", ("error": "...")}

and is answered, by the interrupt's id, with::

    {"decision": "approve" | "edit" | "reject", "args": {...} (edit),
     "message": "..." (reject, optional), "always": true (approve or edit, optional)}

``always`` allows the tool for the rest of the thread (kept in the state's ``allowed_tools``).
An answer that is not one of these, or edited arguments that do not fit the tool's schema, asks
again: a new interrupt whose request carries ``error``; nothing runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypedDict

import jsonschema
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ValidationError

from ponder.errors import ConfigurationError, PonderError

log = logging.getLogger("ponder.agents")

Policy = bool | Callable[[dict[str, Any]], bool]
DECISIONS = ("approve", "edit", "reject")
_REQUEST_KEYS = frozenset({"id", "tool", "args", "description"})


class ApprovalError(PonderError, ValueError):
    """An answer to an approval request that is not one (what was wrong, and the shape asked
    for)."""


class ApprovalRequest(TypedDict, total=False):
    """What a person is asked about one tool call (the value of its interrupt)."""

    id: str  # the tool call's id
    tool: str
    args: dict[str, Any]
    description: str  # what the tool does (its description), for the person
    error: str  # why the last answer was not taken, when asked again


class Decision(TypedDict):
    """An answer, checked: ``args`` are the ones to run with (edited or not)."""

    decision: Literal["approve", "edit", "reject"]
    args: dict[str, Any]
    message: str | None
    always: bool


def tool_policy(tool: BaseTool) -> Policy | None:
    """The tool's own policy: ``@tool(approval=...)``'s, else True for a tool its MCP server
    marks destructive, else None (no approval)."""
    own = getattr(tool, "approval", None)
    if own is not None:
        return own
    if (tool.metadata or {}).get("destructiveHint") is True:
        return True
    return None


def check_policy(name: str, policy: Any) -> Policy:
    """``policy`` if it is one (bool or callable), else ConfigurationError naming the tool."""
    if isinstance(policy, bool) or callable(policy):
        return policy
    raise ConfigurationError(f"the approval policy of tool {name!r} is {policy!r}: use True, "
                             "False or a function of the call's arguments that returns a bool")


def needs_approval(policy: Policy | None, name: str, args: dict[str, Any]) -> bool:
    """Whether a call with ``args`` needs approval under ``policy``. A policy function that
    fails counts as asking for approval (a safety check fails closed)."""
    if policy is None or policy is False:
        return False
    if policy is True:
        return True
    try:
        return bool(policy(dict(args)))
    except Exception:
        log.exception("the approval policy of tool %r failed: the call needs approval", name)
        return True


def request(call: Mapping[str, Any], tool: BaseTool | None, error: str | None = None
            ) -> ApprovalRequest:
    """The request that asks a person about ``call`` (a LangChain tool call)."""
    asked = ApprovalRequest(id=call["id"], tool=call["name"], args=dict(call.get("args") or {}),
                            description=tool.description if tool is not None else "")
    if error:
        asked["error"] = error
    return asked


def is_request(value: Any) -> bool:
    """Whether an interrupt's value is an approval request (so its answer is a decision)."""
    return isinstance(value, Mapping) and _REQUEST_KEYS <= value.keys()


def check_answer(answer: Any, args: dict[str, Any]) -> Decision:
    """The decision in ``answer`` (see the module), ``args`` being the call's own arguments.
    ApprovalError says what is wrong with an answer that is not one."""
    if not isinstance(answer, Mapping):
        raise ApprovalError(
            f"the answer to a tool approval is {_short(answer)}: answer with "
            '{"decision": "approve" | "edit" | "reject"} (with "args" for edit, an optional '
            '"message" for reject)')
    decision = answer.get("decision")
    if decision not in DECISIONS:
        raise ApprovalError(f"the decision {_short(decision)} is not one of approve, edit, "
                            "reject")
    if unknown := sorted(set(answer) - {"decision", "args", "message", "always"}):
        raise ApprovalError(f"an approval answer has no field {', '.join(map(repr, unknown))}: "
                            "its fields are decision, args, message and always")
    always = answer.get("always", False)
    if not isinstance(always, bool) or (always and decision == "reject"):
        raise ApprovalError('"always" is true or false, and only with approve or edit')
    message = answer.get("message")
    if message is not None and not isinstance(message, str):
        raise ApprovalError(f'"message" is a text, not {_short(message)}')
    if decision == "edit":
        edited = answer.get("args")
        if not isinstance(edited, Mapping):
            raise ApprovalError(f'an edit gives the new arguments as an object in "args", not '
                                f"{_short(edited)}")
        args = dict(edited)
    elif answer.get("args") is not None:
        raise ApprovalError(f'"args" belong to an edit, not to {decision}: use "decision": '
                            '"edit" to change the arguments')
    return Decision(decision=decision, args=args, message=message, always=always)


def check_args(tool: BaseTool, args: dict[str, Any]) -> None:
    """ApprovalError listing what does not fit when ``args`` do not fit the tool's schema (a
    pydantic model, or a JSON Schema as MCP tools have)."""
    schema = tool.tool_call_schema
    if isinstance(schema, dict):
        problems = [f"{'.'.join(map(str, e.absolute_path)) or 'arguments'}: {e.message}"
                    for e in jsonschema.Draft202012Validator(schema).iter_errors(args)]
    elif isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            schema.model_validate(args)
            problems = []
        except ValidationError as exc:
            problems = [f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
                        for e in exc.errors()]
    else:  # a schema LangChain knows no way to check: the tool checks its arguments itself
        problems = []
    if problems:
        raise ApprovalError(f"the edited arguments do not fit tool {tool.name!r}: "
                            f"{'; '.join(problems)}")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
