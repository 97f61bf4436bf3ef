"""Documents: what the knowledge base ingests — loaded from files or made in memory, cleaned,
and fingerprinted so that ingesting the same content twice is a no-op."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any


class DocumentError(ValueError):
    """A source that cannot become a document: unreadable, unsupported or empty."""


@dataclass
class Document:
    """One source's text. ``source`` identifies it: ingesting a source again replaces it."""

    text: str
    source: str
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        """Changes exactly when what would be indexed changes."""
        payload = json.dumps([self.text, self.title, self.metadata], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")
_EDGE_SPACES = re.compile(r" ?\n ?")
_BLANK_LINES = re.compile(r"\n\n\n+")


def clean(text: str) -> str:
    """Normalised Unicode, no control characters or replacement marks, no runs of blank space."""
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _EDGE_SPACES.sub("\n", _SPACES.sub(" ", _CONTROL.sub("", text)))
    return _BLANK_LINES.sub("\n\n", text).strip()


def decode(data: bytes) -> str:
    """UTF-8 (with or without BOM), else Windows-1252, else Latin-1, which never fails."""
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


class _TextOfHTML(HTMLParser):
    """The readable text of a page: no scripts, styles or markup; blocks become paragraphs."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    _BLOCK = frozenset({"p", "div", "section", "article", "li", "tr", "br", "h1", "h2", "h3",
                        "h4", "h5", "h6", "pre", "blockquote", "table", "ul", "ol", "header",
                        "footer", "main", "nav", "aside"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: str | None = None
        self._skipping = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n\n")
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6") and not self._skipping:
            self.parts.append("#" * int(tag[1]) + " ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title = (self.title or "") + data.strip()
        elif not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str | None]:
    """The text and the ``<title>`` of an HTML page."""
    parser = _TextOfHTML()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    # Inline whitespace inside a block is layout, not content.
    paragraphs = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return "\n\n".join(p for p in paragraphs if p), parser.title or None


def _pdf_text(path: Path) -> tuple[str, str | None]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        pages = [page.extract_text() or "" for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise DocumentError(f"{path}: not a readable PDF ({exc})") from exc
    return "\n\n".join(pages), title


_MARKDOWN_TITLE = re.compile(r"^#\s+(.+)$", re.MULTILINE)
SUFFIXES = frozenset({".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf"})


def load(path: str | Path, **metadata: Any) -> Document:
    """A document from a text, Markdown, HTML or PDF file; ``metadata`` is kept with it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DocumentError(f"{path}: unsupported file type {suffix or '(none)'!r}; "
                            f"supported: {', '.join(sorted(SUFFIXES))}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    if suffix == ".pdf":
        text, title = _pdf_text(path)
    elif suffix in (".html", ".htm"):
        text, title = html_to_text(decode(data))
    else:
        text = decode(data)
        heading = _MARKDOWN_TITLE.search(text) if suffix in (".md", ".markdown") else None
        title = heading.group(1).strip() if heading else None
    text = clean(text)
    if not text:
        raise DocumentError(f"{path}: the document is empty (no text to index)")
    modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    return Document(text, str(path.resolve()), title=clean(title) if title else None,
                    metadata={"modified": modified, **metadata})


def files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """The files named, and the supported files under the folders named, in a stable order."""
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*")
                              if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif path.exists():
            yield path
        else:
            raise DocumentError(f"{path}: no such file or folder")
