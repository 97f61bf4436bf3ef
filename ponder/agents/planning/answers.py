"""Answers out of reasoning text: extraction per task kind, and normalisation for voting."""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

KINDS = ("number", "option", "text", "json")

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_OPTION = re.compile(r"(?<![A-Za-z])\(?([A-E])\)?(?![A-Za-z])")


def extract_answer(text: str | None, kind: str = "number", trigger: str | None = None
                   ) -> str | None:
    """The answer in ``text``, or None when there is none.

    With a ``trigger`` ("The answer is"), the answer is looked for after its last occurrence
    first; otherwise (or when nothing follows it) the last number or option in the text wins,
    as in the Chain-of-Thought papers.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown answer kind {kind!r}: use one of {', '.join(KINDS)}")
    if not text or not text.strip():
        return None
    tail = text
    if trigger:
        at = text.lower().rfind(trigger.lower())
        if at >= 0 and text[at + len(trigger):].strip():
            tail = text[at + len(trigger):]
    if kind == "number":
        found = _NUMBER.findall(tail) if tail is not text else _NUMBER.findall(text)[-1:]
        return normalize_answer(found[0], kind) if found else None
    if kind == "option":
        found = _OPTION.findall(tail)
        if not found:
            return None
        return found[0] if tail is not text else found[-1]
    if kind == "json":
        return _first_json(tail)
    line = tail.strip().splitlines()[0].strip() if tail.strip() else ""
    return normalize_answer(line, kind) or None


def normalize_answer(answer: str | None, kind: str = "number") -> str | None:
    """A canonical form, so equal answers vote together ("18.00" == "$18" == "18")."""
    if answer is None:
        return None
    if kind == "number":
        cleaned = answer.replace(",", "").replace("$", "").strip().rstrip(".")
        try:
            if "/" in cleaned:
                value = Fraction(cleaned)
                return str(value.numerator) if value.denominator == 1 else str(value)
            number = Decimal(cleaned)
        except (InvalidOperation, ValueError, ZeroDivisionError):
            return None
        if number == number.to_integral_value():
            return str(int(number))
        return format(number.normalize(), "f")
    if kind == "option":
        return answer.strip().strip("().").upper() or None
    if kind == "json":
        try:
            return json.dumps(json.loads(answer), sort_keys=True)
        except (json.JSONDecodeError, TypeError):
            return None
    return re.sub(r"\s+", " ", answer.strip().strip(".").strip('"').lower()) or None


def _first_json(text: str) -> str | None:
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char in "{[":
            try:
                value, _ = decoder.raw_decode(text[start:])
            except json.JSONDecodeError:
                continue
            return json.dumps(value, sort_keys=True)
    return None
