"""Parsers of model replies: models wrap what they were asked for in prose, code fences and list
markers, so every reply is read by these few functions rather than by a parser per caller.

- ``first_json``: the first JSON object or list in a reply (in prose or a ```json fence);
- ``json_list``: the first JSON list, ``[]`` when there is none;
- ``list_items``: the items of a numbered or bulleted list ("1.", "2)", "-", "*", "•").
"""

from __future__ import annotations

import json
import re
from typing import Any

# A list marker: "1." or "2)" or a bullet, followed by a space; repeated markers ("2. - x") go
# too. The space is required so that "1.5 kg" and "-3 degrees" keep their numbers.
_MARKER = re.compile(r"^\s*(?:(?:\d+[.)]|[-*•])\s+)+")

# Where a JSON value may start, per wanted type.
_OPENERS = {dict: "{", list: "["}


def first_json(text: str, kind: type[dict] | type[list] | None = None) -> dict | list | None:
    """The first JSON object or list in ``text`` (only a ``kind``, dict or list, when given), or
    None when there is none.

    Each ``{`` or ``[`` is tried in turn with the standard decoder, so prose around the value, a
    code fence, or an earlier bracket that starts no valid JSON (``"[1] see below"``) is skipped.
    Scalars (numbers, strings) are not looked for: a reply is full of them.
    """
    openers = _OPENERS[kind] if kind else "{["
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char in openers:
            try:
                value, _ = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                continue
            return value
    return None


def json_list(text: str) -> list[Any]:
    """The first JSON list in a model's reply, ``[]`` when there is none (also a list nested in
    an object: ``{"facts": [...]}`` gives the facts)."""
    value = first_json(text, list)
    return value if isinstance(value, list) else []


def list_items(text: str, limit: int | None = None) -> list[str]:
    """The items of a list in a model's reply, without their markers, at most ``limit``.

    When some lines carry a marker ("1.", "2)", "-", "*", "•"), only those are items, so a
    preamble ("Here is the plan:") is left out; a reply of plain lines is taken line by line.
    Blank lines are never items.
    """
    lines = text.splitlines()
    marked = [_MARKER.sub("", line, count=1).strip() for line in lines if _MARKER.match(line)]
    items = marked if any(marked) else [line.strip() for line in lines]
    return [item for item in items if item][:limit]
