"""Typed answers over HTTP: OpenAI's ``response_format`` (``json_schema``, with ``strict``, and
``json_object``) checked for a request and handed to the agent's run.

``run_format`` is what a route calls: the response format's run config for the agent (see
``ponder.agents.output``: the answer is asked for with the model's structured output where it
has one, validated and repaired; the reply's content is the answer's JSON), or a 400 naming what
is wrong with it.
"""

from __future__ import annotations

from typing import Any

from ponder.agents.agent import Agent
from ponder.agents.output import OutputSchema
from ponder.config import ConfigurationError
from ponder.graphs.targets import Target
from ponder.server.errors import APIError


def run_format(value: Any, target: Target, param: str = "response_format"
               ) -> dict[str, Any] | None:
    """The ``configurable`` entries that make ``target``'s run answer in the response format
    ``value`` (OpenAI's shape), or None when it asks for text (None or ``{"type": "text"}``).

    APIError 400 (``param`` names the field) for a malformed format, or for a target that is a
    graph: only an agent answers in a format.
    """
    try:
        schema = OutputSchema.from_response_format(value)
    except ConfigurationError as exc:
        raise APIError(400, f"{param} is not valid: {exc}", param=param) from None
    if schema is None:
        return None
    if not isinstance(target, Agent):
        raise APIError(400, f"{param} is not supported by {target.name!r}: it is a graph, "
                            "which answers as its nodes do; only an agent answers in a "
                            "format", param=param)
    return {"response_format": schema.response_format()}
