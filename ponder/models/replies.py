"""Parsers of model replies: models wrap what they were asked for in prose and code fences."""

from __future__ import annotations

import json
import re


def json_list(text: str) -> list:
    """The first JSON list in a model's reply ([] when there is none): models wrap JSON in
    prose and code fences."""
    match = re.search(r"\[.*\]", text, re.DOTALL)
    if not match:
        return []
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []
