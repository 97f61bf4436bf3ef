"""Text analysis for word search in any script: what the text index sees of a text and a query.

Chinese, Japanese, Korean, Thai, Lao, Khmer and Burmese write words without spaces between
them (Korean puts its particles on the word), so a word-splitting tokenizer (FTS5's
``unicode61``, Postgres's parser, bm25s's regular expression) takes a whole clause for one
word, and no query shorter than the clause can match it. Here each run of those scripts becomes
its overlapping character bigrams (Lucene's ``CJKBigramFilter``; Kwok 1997, "Comparing
representations in Chinese information retrieval"): no dictionary, one analyser for every such
language, and on CMRC 2018 it ranks as well as BM25 over jieba's words (README, knowledge
base). The index also keeps each character alone, so a query of one character finds it too.
Every other script is left as it is: the index's own tokenizer splits and stems it (English
keeps Porter stemming). Text is NFKC-normalised first, as ingested documents are (full-width
Latin letters are letters).

``ANALYZER`` names this analysis: an index built with another one is rebuilt.
"""

from __future__ import annotations

import re
import unicodedata

ANALYZER = "unspaced-bigram-2"

# Scripts written without spaces between words, as the inside of a regular-expression character
# class: Han (with extensions, compatibility ideographs and the iteration marks 々〆〇), kana,
# Hangul syllables and jamo, Thai, Lao, Khmer and Myanmar.
UNSPACED_CHARACTERS = (
    "\u3005-\u3007\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af\U00020000-\U0003134f"
    "\u0e00-\u0e7f\u0e80-\u0eff\u1780-\u17ff\u1000-\u109f")
UNSPACED = re.compile(f"[{UNSPACED_CHARACTERS}]")
_UNSPACED_RUN = re.compile(f"[{UNSPACED_CHARACTERS}]+")
_WORD = re.compile(r"\w+")
# Words that match nearly every chunk: they cost time in the text index and rank nothing.
STOPWORDS = frozenset(
    "a an and are as at be been but by can do does for from had has have how i if in into is "
    "it its of on or our so such than that the their them then there these they this those to "
    "was we were what when where which while who why will with you your".split()
)


def bigrams(run: str) -> list[str]:
    """The overlapping character pairs of ``run`` (the run itself when it is one character)."""
    return [run[i : i + 2] for i in range(len(run) - 1)] or [run]


def index_text(text: str) -> str:
    """``text`` as the index stores it: NFKC-normalised, every run of an unspaced script
    replaced by its characters and bigrams, space-separated; everything else unchanged."""
    text = _normalized(text)
    if not UNSPACED.search(text):
        return text
    return _UNSPACED_RUN.sub(lambda m: f" {' '.join([*m.group(), *bigrams(m.group())])} ", text)


def query_text(text: str) -> str:
    """``text`` as a query searches the index: NFKC-normalised, every run of an unspaced script
    replaced by its bigrams."""
    text = _normalized(text)
    if not UNSPACED.search(text):
        return text
    return _UNSPACED_RUN.sub(lambda m: f" {' '.join(bigrams(m.group()))} ", text)


def query_terms(text: str) -> list[str]:
    """The distinct searchable terms of a query, lower-cased, without stop words; a run of an
    unspaced script gives its bigrams."""
    words = (w.lower() for w in _WORD.findall(query_text(text)))
    return list(dict.fromkeys(w for w in words if w not in STOPWORDS))


def _normalized(text: str) -> str:
    return text if unicodedata.is_normalized("NFKC", text) else unicodedata.normalize("NFKC", text)
