"""Loading, cleaning and fingerprinting documents."""

import re

import pytest

from ponder.memory.knowledge.documents import (
    Document,
    DocumentError,
    clean,
    files,
    html_to_text,
    load,
)
from tests.helpers.pdf import write_pdf


def test_clean_removes_control_characters_and_blank_runs():
    messy = "  Tea\x00 \u200bleaves\t\t grow \r\n\r\n\r\n\n  slowly \ufffd.  \n \n"
    assert clean(messy) == "Tea leaves grow\n\nslowly ."


def test_text_files_in_a_legacy_encoding_are_decoded(tmp_path):
    path = tmp_path / "menu.txt"
    path.write_bytes("Caf\xe9 cr\xe8me \x96 \x80 3".encode("latin-1"))  # Windows-1252 bytes
    assert load(path).text == "Café crème – € 3"


def test_markdown_title_comes_from_the_first_heading(tmp_path):
    path = tmp_path / "guide.md"
    path.write_text("Intro line\n\n# Brewing guide\n\nUse water at 80 C.\n")
    document = load(path, team="tea")
    assert document.title == "Brewing guide"
    assert document.metadata["team"] == "tea" and "modified" in document.metadata
    assert document.source == str(path.resolve())


def test_html_keeps_the_text_and_drops_scripts_styles_and_markup(tmp_path):
    path = tmp_path / "page.html"
    path.write_text("<html><head><title>Opening hours</title><style>p{color:red}</style>"
                    "<script>alert('x')</script></head><body><nav>Home</nav>"
                    "<h2>Weekdays</h2><p>Open   9&ndash;17,\n<b>closed</b> on Mondays.</p>"
                    "<noscript>enable js</noscript></body></html>")
    document = load(path)
    assert document.title == "Opening hours"
    assert document.text == "Home\n\n## Weekdays\n\nOpen 9–17, closed on Mondays."
    assert "alert" not in document.text and "color" not in document.text


def test_pdf_text_and_title_are_extracted(tmp_path):
    path = write_pdf(tmp_path / "policy.pdf", ["Returns are accepted for 30 days.",
                                                "Keep the receipt."], title="Return policy")
    document = load(path)
    assert document.title == "Return policy"
    assert "Returns are accepted for 30 days." in document.text
    assert "Keep the receipt." in document.text


def test_bad_files_are_errors_that_name_the_file(tmp_path):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not really a pdf")
    with pytest.raises(DocumentError, match="broken.pdf: not a readable PDF"):
        load(broken)
    empty = tmp_path / "empty.md"
    empty.write_text(" \n\n\t\n")
    with pytest.raises(DocumentError, match="empty.md: the document is empty"):
        load(empty)
    with pytest.raises(DocumentError, match="photo.png: unsupported file type '.png'"):
        load(tmp_path / "photo.png")
    folder = tmp_path / "folder.txt"
    folder.mkdir()
    with pytest.raises(DocumentError, match="folder.txt: cannot read the file"):
        load(folder)
    with pytest.raises(DocumentError, match="missing: no such file or folder"):
        list(files([tmp_path / "missing"]))


def test_folders_expand_to_their_supported_files_in_order(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/2.md", "a.txt", "b/1.html", "skip.png"):
        (tmp_path / name).write_text("x")
    assert [p.relative_to(tmp_path).as_posix() for p in files([tmp_path])] == \
        ["a.txt", "b/1.html", "b/2.md"]


def test_the_content_hash_follows_text_title_and_metadata():
    base = Document("text", "s", "t", {"a": 1})
    assert base.content_hash == Document("text", "other-source", "t", {"a": 1}).content_hash
    assert base.content_hash != Document("text!", "s", "t", {"a": 1}).content_hash
    assert base.content_hash != Document("text", "s", "T", {"a": 1}).content_hash
    assert base.content_hash != Document("text", "s", "t", {"a": 2}).content_hash


def test_html_cells_and_definitions_stay_separate_words():
    text, _ = html_to_text("<table><tr><th>Tea</th><th>Kind</th></tr>"
                           "<tr><td>Sencha</td><td>Matcha</td></tr></table>"
                           "<dl><dt>Gyokuro</dt><dd>Shaded</dd></dl>"
                           "<ul><li>Hojicha</li><li>Genmaicha</li></ul>"
                           "<div>Bancha</div><div>Kukicha</div>")
    assert "| Tea | Kind |\n| --- | --- |\n| Sencha | Matcha |" in text
    words = set(re.findall(r"\w+", text))
    assert {"Sencha", "Matcha", "Gyokuro", "Shaded", "Hojicha", "Genmaicha", "Bancha",
            "Kukicha"} <= words


def test_only_the_documents_title_is_its_title():
    text, title = html_to_text(
        "<html><head><title>Tea shop</title></head><body><h1>Teas</h1>"
        "<button><svg viewBox='0 0 1 1'><title>cart icon</title><path d='M0'/></svg>Cart"
        "</button><!-- a comment --><pre>line 1\n  line 2</pre>"
        "<math><mi>x</mi></math><p>Open <em>daily</em>, see <a href='/h'>hours</a>.</p>"
        "</body></html>")
    assert title == "Tea shop"
    assert "cart icon" not in text and "comment" not in text and "<" not in text
    assert text == "# Teas\n\nCart\n\n```\nline 1\n  line 2\n```\n\nOpen daily, see hours."
    # A page with no <title> has no title, even with an SVG's inside it.
    assert html_to_text("<svg><title>logo</title></svg><p>Hi</p>") == ("Hi", None)


def test_html_drops_what_is_not_the_pages_text():
    text, title = html_to_text(
        '<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE html><html><body>'
        "<p>Hello</p><?php echo 1; ?><p hidden>secret</p><div style='display: none'>gone</div>"
        "<p>Buy<svg><title>icon</title></svg>now, <img alt='a teapot'></p>"
        "<form><input value='typed'><select><option>O1</option><option>O2</option></select>"
        "</form><title>Body title</title></body></html>")
    assert clean(text) == "Hello\n\nBuy now, a teapot"
    assert title == "Body title"


def test_large_pages_convert_in_linear_time():
    import time

    paragraph = "<p>Sencha is a <b>green</b> tea from <a href='/x'>Japan</a>, rolled.</p>\n"
    timings = []
    for copies in (1_000, 8_000):
        began = time.perf_counter()
        html_to_text(f"<html><body>{paragraph * copies}</body></html>")
        timings.append(time.perf_counter() - began)
    # Eight times the page, well under 64 times the time (quadratic) on a busy machine.
    assert timings[1] < 24 * max(timings[0], 0.01)
