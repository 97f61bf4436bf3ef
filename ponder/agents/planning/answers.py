"""Answers out of reasoning text: extraction per answer kind, and the canonical form votes
compare."""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from ponder.models.replies import first_json

KINDS = ("number", "option", "text", "json", "expression")

# Commas only as thousands separators ("1,234"), so "3,4,5" is three numbers.
_NUMBER = re.compile(r"-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?")
_OPTION = re.compile(r"(?<![A-Za-z])\(?([A-E])\)?(?![A-Za-z])")
_PARENTHESISED_OPTION = re.compile(r"\(([A-E])\)")


def extract_answer(text: str | None, kind: str = "number", trigger: str | None = None, *,
                   first: bool = False) -> str | None:
    """The answer in ``text``, or None when there is none.

    With a ``trigger`` ("The answer is"), the answer is the first one after the trigger's first
    occurrence (a model that goes on to invent another question answers it later). Without one,
    the last number or option in the text wins, as in the Chain-of-Thought papers; ``first=True``
    takes the first instead, for text that continues an answer trigger.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown answer kind {kind!r}: use one of {', '.join(KINDS)}")
    if not text or not text.strip():
        return None
    tail, after_trigger = text, first
    if trigger:
        at = text.lower().find(trigger.lower())
        if at >= 0 and text[at + len(trigger):].strip():
            tail, after_trigger = text[at + len(trigger):], True
    if kind == "number":
        found = _NUMBER.findall(tail)
        if not found:
            return None
        return canonical_answer(found[0] if after_trigger else found[-1], kind)
    if kind == "option":
        found = _PARENTHESISED_OPTION.findall(tail) or _OPTION.findall(tail)
        if not found:
            return None
        return found[0] if after_trigger else found[-1]
    if kind == "json":
        value = first_json(tail)
        return None if value is None else json.dumps(value, sort_keys=True)
    lines = [line.strip() for line in tail.strip().splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[0] if after_trigger else lines[-1]
    return canonical_answer(line.lstrip(":-– ").strip(), kind) or None


def canonical_answer(answer: str | None, kind: str = "number") -> str | None:
    """The canonical form of an answer of ``kind``, so equal answers vote together: "18.00",
    "$18" and "18" are "18"; an option is its upper-case letter; JSON is re-serialised with sorted
    keys; text is lower case with single spaces; an expression loses its spaces. None when
    ``answer`` is not of the kind."""
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
    if kind == "expression":  # "(6 - 4) * (4 + 8) = 24" and "(6-4)*(4+8)=24" are one answer
        return re.sub(r"\s+", "", answer.strip().rstrip(".")) or None
    return re.sub(r"\s+", " ", answer.strip().strip(".").strip('"').lower()) or None

