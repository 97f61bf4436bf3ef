"""Recursive, token-sized chunking with overlap."""

import pytest

from ponder.memory.knowledge.chunking import Chunker, count_tokens


def test_short_text_is_one_chunk():
    assert Chunker(size=50).split("  One short paragraph.  ") == ["One short paragraph."]
    assert Chunker().split(" \n ") == []


def test_chunks_respect_the_size_and_split_at_headings_first():
    section = "Sentence number {} is about tea. "
    text = ("# Green tea\n\n" + "".join(section.format(i) for i in range(6)) +
            "\n\n# Black tea\n\n" + "".join(section.format(i) for i in range(6, 12)))
    chunks = Chunker(size=60, overlap=0).split(text)
    assert all(count_tokens(c) <= 60 for c in chunks)
    assert chunks[0].startswith("# Green tea") and "Black tea" not in chunks[0]
    assert any(c.startswith("# Black tea") for c in chunks)


def test_long_paragraphs_split_at_sentences_with_whole_sentence_overlap():
    sentences = [f"Fact {i} says the kettle holds {i} litres." for i in range(40)]
    chunks = Chunker(size=40, overlap=12).split(" ".join(sentences))
    assert len(chunks) > 3
    assert all(count_tokens(c) <= 40 for c in chunks)
    for before, after in zip(chunks, chunks[1:], strict=False):
        last_sentence = before.split(". ")[-1]
        assert after.startswith(last_sentence)  # the overlap is the previous chunk's tail
    # Every sentence survives whole in some chunk.
    for sentence in sentences:
        assert any(sentence in chunk for chunk in chunks)


def test_a_word_longer_than_a_chunk_is_cut():
    blob = "x" * 10 + "-" * 30
    chunks = Chunker(size=8, overlap=0).split(f"see {blob} here")
    assert all(count_tokens(c) <= 8 for c in chunks)
    assert "".join(chunks).replace(" ", "").replace("see", "").replace("here", "") == blob


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="overlap in"):
        Chunker(size=10, overlap=10)
