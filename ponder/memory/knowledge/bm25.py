"""BM25 over chunks held in memory (bm25s): how the Postgres store ranks by words.

Postgres full text has no inverse document frequency, and on SciFact it ranks far below BM25
(nDCG@10 0.56 against 0.70), so the Postgres store keeps this index beside the database and
rebuilds it when the database says its chunks changed.
"""

from __future__ import annotations

from collections.abc import Sequence

from ponder.memory.knowledge.analysis import UNSPACED, index_text, query_text

# bm25s's own pattern (words of two or more characters), and also one character of a script
# written without spaces: the analyser indexes those (see ``analysis.py``).
_TOKEN_PATTERN = rf"(?u)\b\w\w+\b|{UNSPACED.pattern}"


class BM25Index:
    """Chunks ``ids`` with their ``texts``, ranked by BM25 (Lucene's variant, English stemming,
    stop words removed, UNSPACED text as character bigrams)."""

    def __init__(self, ids: Sequence[int], texts: Sequence[str]) -> None:
        import bm25s
        import numpy
        import Stemmer

        self._bm25s, self._numpy = bm25s, numpy
        self._stemmer = Stemmer.Stemmer("english")
        self.ids = numpy.asarray(ids, dtype=numpy.int64)
        self._positions = {int(i): n for n, i in enumerate(self.ids)}
        self._index = bm25s.BM25()
        if len(texts):
            self._index.index(self._tokenize([index_text(t) for t in texts], ids=True),
                              show_progress=False)

    def _tokenize(self, texts: list[str], ids: bool):
        return self._bm25s.tokenize(texts, token_pattern=_TOKEN_PATTERN, stemmer=self._stemmer,
                                    stopwords="en", return_ids=ids, show_progress=False)

    def search(self, query: str, k: int, allowed: Sequence[int] | None = None
               ) -> list[tuple[int, float]]:
        """The best ``k`` (id, score) pairs that match at least one query word; only ``allowed``
        ids when given."""
        k = min(k, len(self.ids))
        if k == 0:
            return []
        mask = None
        if allowed is not None:
            mask = self._numpy.zeros(len(self.ids), dtype=self._numpy.float32)
            mask[[self._positions[i] for i in allowed if i in self._positions]] = 1.0
        tokens = self._tokenize([query_text(query)], ids=False)
        positions, scores = self._index.retrieve(tokens, k=k,
                                                 show_progress=False, weight_mask=mask)
        return [(int(self.ids[p]), float(s)) for p, s in zip(positions[0], scores[0],
                                                              strict=True) if s > 0]
