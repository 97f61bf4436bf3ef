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
from pathlib import Path
from typing import Any

from ponder.errors import PonderError


class DocumentError(PonderError, ValueError):
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


# Elements whose text is not the page's: code, styles, embedded documents and images, forms'
# machinery, and the title (the document's title, not its text).
_NOT_TEXT = ("script", "style", "noscript", "template", "svg", "math", "head", "title", "iframe",
             "object", "canvas", "select", "datalist")
_INLINE_MARKUP = ["a", "b", "strong", "em", "i", "u", "s", "del", "ins", "mark", "small", "sub",
                  "sup", "code", "kbd", "span", "label", "button"]
_CODE_BLOCK = re.compile(r"(```.*?```)", re.DOTALL)
_LINE_EDGES = re.compile(r"[ \t]*\n[ \t]*")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)


def html_to_text(html: str) -> tuple[str, str | None]:
    """The text of an HTML page as Markdown (markdownify), and its ``<title>``.

    Headings become ``#`` lines (the chunker splits there), blocks paragraphs, list items
    lines, table rows ``| cell | cell |``, an image its ``alt`` text; white space in running
    text is collapsed as a browser does. Scripts, styles, inline SVG and MathML, form controls,
    hidden elements, comments and processing instructions are dropped, and so are link targets.
    The title is the document's own ``<title>``, never one inside an SVG or MathML element.
    """
    from bs4 import BeautifulSoup, NavigableString
    from markdownify import MarkdownConverter

    soup = BeautifulSoup(html, "html.parser")
    title = next((t.get_text(" ", strip=True) for t in soup.find_all("title")
                  if not t.find_parent(["svg", "math"])), None)
    for element in soup.find_all(_NOT_TEXT):
        element.replace_with(" ")  # "Buy<svg>..</svg>now" is two words
    for element in soup.find_all(_is_hidden):
        element.decompose()
    for image in soup.find_all("img"):
        image.replace_with(f" {image.get('alt') or ''} ")
    # Comments, doctypes, <?xml ...?> and other markup that is not text.
    for string in soup.find_all(string=lambda s: type(s) is not NavigableString):
        string.extract()
    # wrap=True collapses white space (a line break inside a paragraph is a space) but not in
    # <pre>; no wrap_width, no line filling. No Markdown escapes or emphasis marks: they would
    # put backslashes and stars into the indexed text. Links keep their words only.
    converter = MarkdownConverter(heading_style="ATX", bullets="-", strip=_INLINE_MARKUP,
                                  wrap=True, wrap_width=None, escape_asterisks=False,
                                  escape_underscores=False, escape_misc=False)
    markdown = converter.convert_soup(soup)
    # Spaces left at the edges of lines by dropped elements, outside code blocks (``` fences).
    parts = _CODE_BLOCK.split(markdown)
    parts[::2] = [_LINE_EDGES.sub("\n", part) for part in parts[::2]]
    return "".join(parts).strip(), title or None


def _is_hidden(element) -> bool:
    return (element.has_attr("hidden") or element.get("aria-hidden") == "true"
            or bool(_HIDDEN_STYLE.search(element.get("style") or ""))
            or element.name == "input")


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
