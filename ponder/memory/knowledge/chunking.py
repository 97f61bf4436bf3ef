"""Chunking: recursive splitting along the text's own structure, sized and overlapped in tokens.

A chunk breaks at the largest unit that fits: a section (Markdown heading), then a paragraph,
a line, a sentence, a word. Consecutive units are packed up to ``size`` tokens, and each chunk
repeats up to ``overlap`` tokens of whole units from the end of the one before, so a fact that
straddles a boundary is whole in at least one chunk.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_TOKEN = re.compile(r"\w+|[^\w\s]")

# Split points, largest unit first; each keeps its text whole (zero-width or whitespace splits).
_SEPARATORS = (
    re.compile(r"\n+(?=#{1,6} )"),      # before a Markdown heading
    re.compile(r"\n\s*\n"),             # paragraphs
    re.compile(r"\n"),                  # lines
    re.compile(r"(?<=[.!?;:])\s+"),     # sentences
    re.compile(r"\s+"),                 # words
)


def count_tokens(text: str) -> int:
    """Words and punctuation marks: close to what subword tokenizers count for English prose."""
    return len(_TOKEN.findall(text))


@dataclass(frozen=True)
class Chunker:
    """Splits text into chunks of at most ``size`` tokens with ``overlap`` tokens of context."""

    size: int = 256
    overlap: int = 32
    count: Callable[[str], int] = count_tokens

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.overlap < self.size:
            raise ValueError(f"chunk size must be >= 1 and overlap in [0, size): got "
                             f"size={self.size}, overlap={self.overlap}")

    def split(self, text: str) -> list[str]:
        text = text.strip()
        if not text:
            return []
        if self.count(text) <= self.size:
            return [text]
        return self._pack(self._units(text, 0))

    def _units(self, text: str, level: int) -> list[tuple[str, int, str]]:
        """(text, tokens, joiner) units no larger than ``size``, in order."""
        if level == len(_SEPARATORS):
            return self._cut(text)
        separator = _SEPARATORS[level]
        joiner = "\n\n" if level < 2 else ("\n" if level == 2 else " ")
        units: list[tuple[str, int, str]] = []
        for part in separator.split(text):
            part = part.strip()
            if not part:
                continue
            tokens = self.count(part)
            if tokens <= self.size:
                units.append((part, tokens, joiner))
            else:
                units.extend(self._units(part, level + 1))
        return units

    def _cut(self, text: str) -> list[tuple[str, int, str]]:
        """A single word longer than a chunk (a URL, a base64 blob): cut at token boundaries."""
        tokens = _TOKEN.findall(text)
        return [("".join(tokens[i : i + self.size]), len(tokens[i : i + self.size]), "")
                for i in range(0, len(tokens), self.size)]

    def _pack(self, units: list[tuple[str, int, str]]) -> list[str]:
        chunks: list[str] = []
        current: list[tuple[str, int, str]] = []
        total = 0
        for unit in units:
            if current and total + unit[1] > self.size:
                chunks.append(_join(current))
                # Carry whole units from the end as overlap, while they fit beside the next unit.
                carried: list[tuple[str, int, str]] = []
                kept = 0
                for previous in reversed(current):
                    size = kept + previous[1]
                    if size > self.overlap or size + unit[1] > self.size:
                        break
                    carried.insert(0, previous)
                    kept += previous[1]
                current, total = carried, kept
            current.append(unit)
            total += unit[1]
        if current:
            chunks.append(_join(current))
        return chunks


def _join(units: list[tuple[str, int, str]]) -> str:
    text = units[0][0]
    for part, _, joiner in units[1:]:
        text += joiner + part
    return text
