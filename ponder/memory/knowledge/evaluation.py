"""Evaluation: retrieval metrics, answer metrics, the wider checks of generated text, and a
BEIR-format harness (``ponder eval retrieval``).

Retrieval metrics take a ranked list of ids and the relevant ids (graded: id -> gain).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import string
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage

from ponder.errors import PonderError
from ponder.memory.knowledge.analysis import query_terms
from ponder.similarity import cosine

# -- retrieval ---------------------------------------------------------------------------


def reciprocal_rank(ranked: Sequence[str], relevant: dict[str, float], k: int = 10) -> float:
    """1 / the rank of the first relevant id in the top ``k`` of ``ranked``, or 0.0 (for MRR@k).

    ``relevant`` maps ids to graded relevance; a grade above 0 is relevant.
    """
    return next((1.0 / i for i, d in enumerate(ranked[:k], 1) if relevant.get(d, 0) > 0), 0.0)


def average_precision(ranked: Sequence[str], relevant: dict[str, float], k: int | None = None
                      ) -> float:
    """Average precision of ``ranked`` (the top ``k``, or all): the mean precision at each
    relevant hit, over all relevant ids; 0.0 when none are relevant."""
    wanted = sum(1 for g in relevant.values() if g > 0)
    hits, total = 0, 0.0
    for i, d in enumerate(ranked[:k] if k else ranked, 1):
        if relevant.get(d, 0) > 0:
            hits += 1
            total += hits / i
    return total / wanted if wanted else 0.0


def ndcg(ranked: Sequence[str], relevant: dict[str, float], k: int = 10) -> float:
    """nDCG@k with linear gains: the DCG of ``ranked`` over that of the ideal order, 0.0 to 1.0."""
    gains = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    actual = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    return actual / ideal if ideal else 0.0


def precision_at(ranked: Sequence[str], relevant: dict[str, float], k: int) -> float:
    """The share of the top ``k`` positions holding a relevant id (a short ranking still divides
    by k)."""
    return sum(1 for d in ranked[:k] if relevant.get(d, 0) > 0) / k


def recall_at(ranked: Sequence[str], relevant: dict[str, float], k: int) -> float:
    """The share of relevant ids found in the top ``k``; 0.0 when none are relevant."""
    wanted = sum(1 for g in relevant.values() if g > 0)
    return sum(1 for d in ranked[:k] if relevant.get(d, 0) > 0) / wanted if wanted else 0.0


# -- answers -----------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation of answer text, as its official evaluation script names and does it:
    lower case, no punctuation, articles or extra spaces. (A planner's answers are made
    comparable by ``agents.planning.answers.canonical_answer``, per answer kind.)"""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the answers are equal after SQuAD normalisation, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's token F1 of the normalised answers, 0.0 to 1.0 (1.0 when both are empty)."""
    predicted, wanted = normalize_answer(prediction).split(), normalize_answer(reference).split()
    common = sum((Counter(predicted) & Counter(wanted)).values())
    if not predicted or not wanted or not common:
        return float(predicted == wanted)
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(prediction: str, reference: str, max_n: int = 4) -> float:
    """Sentence BLEU with add-one smoothing of the higher orders (Lin and Och 2004)."""
    predicted, wanted = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not wanted:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        candidates = _ngrams(predicted, n)
        matched = sum((candidates & _ngrams(wanted, n)).values())
        total = sum(candidates.values())
        smoothing = 0 if n == 1 else 1
        if matched + smoothing == 0:
            return 0.0
        log_precision += math.log((matched + smoothing) / (total + smoothing)) / max_n
    brevity = min(0.0, 1 - len(wanted) / len(predicted))
    return math.exp(brevity + log_precision)


def rouge_n(prediction: str, reference: str, n: int = 1) -> float:
    """ROUGE-N F1."""
    predicted = _ngrams(normalize_answer(prediction).split(), n)
    wanted = _ngrams(normalize_answer(reference).split(), n)
    overlap = sum((predicted & wanted).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(predicted.values()), overlap / sum(wanted.values())
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: from the longest common subsequence of words."""
    a, b = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[-1]))
        previous = current
    lcs = previous[-1]
    if not lcs:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


# -- generated text ----------------------------------------------------------------------

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORDS = re.compile(r"[A-Za-z]+")


def _syllables(word: str) -> int:
    word = word.lower()
    groups = re.findall(r"[aeiouy]+", word)
    count = len(groups) - (1 if word.endswith("e") and len(groups) > 1 else 0)
    return max(count, 1)


def flesch_reading_ease(text: str) -> float:
    """206.835 - 1.015 words/sentence - 84.6 syllables/word: higher reads more easily."""
    words = _WORDS.findall(text)
    sentences = [s for s in _SENTENCE.split(text.strip()) if s]
    if not words or not sentences:
        return 0.0
    syllables = sum(_syllables(w) for w in words)
    return 206.835 - 1.015 * len(words) / len(sentences) - 84.6 * syllables / len(words)


def redundancy_ratio(text: str, n: int = 3) -> float:
    """The share of the text's word n-grams that repeat an earlier one: 0 says everything once."""
    counts = _ngrams(normalize_answer(text).split(), n)
    total = sum(counts.values())
    return sum(c - 1 for c in counts.values()) / total if total else 0.0


async def semantic_diversity(parts: Sequence[str], embeddings: Embeddings) -> float:
    """The mean of 1 - cosine similarity over pairs of parts (paragraphs, answers)."""
    if len(parts) < 2:
        return 0.0
    vectors = await embeddings.aembed_documents(list(parts))
    pairs = list(combinations(vectors, 2))
    return sum(1 - cosine(a, b) for a, b in pairs) / len(pairs)


def information_coverage(text: str, facts: Sequence[str], threshold: float = 0.6) -> float:
    """The share of reference facts the text covers: a fact counts when at least ``threshold``
    of its content words appear in the text."""
    present = set(query_terms(text))
    covered = 0
    for fact in facts:
        words = query_terms(fact)
        if words and sum(w in present for w in words) / len(words) >= threshold:
            covered += 1
    return covered / len(facts) if facts else 0.0


@dataclass
class EvidenceJudgement:
    """The shares (0 to 1) of an answer's claims the evidence supports and contradicts, and how
    many claims (sentences) there were."""
    supported_rate: float
    misleading_rate: float
    claims: int


async def judge_evidence(model: BaseChatModel, answer: str, evidence: Sequence[str]
                         ) -> EvidenceJudgement:
    """Each sentence of ``answer`` judged against the evidence: SUPPORTED, UNSUPPORTED or
    CONTRADICTED (misleading). Claims are judged concurrently."""
    claims = [s.strip() for s in _SENTENCE.split(answer.strip()) if s.strip()]
    passages = "\n\n".join(f"[{i}] {text}" for i, text in enumerate(evidence, 1))

    async def judge(claim: str) -> str:
        reply = await model.ainvoke([
            SystemMessage("Judge the claim against the evidence. Reply with one word: SUPPORTED "
                          "if the evidence states or implies it, CONTRADICTED if the evidence "
                          "says otherwise, UNSUPPORTED if the evidence does not say."),
            HumanMessage(f"Evidence:\n{passages}\n\nClaim: {claim}"),
        ])
        return reply.text.strip().upper()

    verdicts = await asyncio.gather(*(judge(c) for c in claims))
    if not claims:
        return EvidenceJudgement(0.0, 0.0, 0)
    supported = sum(v.startswith("SUPPORTED") for v in verdicts)
    misleading = sum(v.startswith("CONTRADICTED") for v in verdicts)
    return EvidenceJudgement(supported / len(claims), misleading / len(claims), len(claims))


# -- BEIR --------------------------------------------------------------------------------


class DatasetError(PonderError, ValueError):
    """A folder that is not a readable BEIR data set."""


@dataclass
class BeirDataset:
    """A BEIR data set: the corpus records (``_id``, ``title``, ``text``), queries by id, and
    qrels (query id to {corpus id: relevance grade}) of one split."""
    corpus: list[dict[str, Any]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, float]]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DatasetError(f"{path} is missing: a BEIR folder has corpus.jsonl, queries.jsonl "
                           f"and qrels/<split>.tsv")
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}:{number}: not JSON ({exc.msg})") from exc
    return rows


def load_beir(folder: str | Path, split: str) -> BeirDataset:
    """Load the BEIR data set in ``folder`` (``corpus.jsonl``, ``queries.jsonl``,
    ``qrels/<split>.tsv``).

    Raises DatasetError when a file is missing (naming the splits there), a line is not JSON or not
    three tab-separated fields, or the qrels name queries not in ``queries.jsonl``.
    """
    folder = Path(folder)
    corpus = _jsonl(folder / "corpus.jsonl")
    queries = {str(q["_id"]): q["text"] for q in _jsonl(folder / "queries.jsonl")}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise DatasetError(f"{qrels_path} is missing: splits here: {', '.join(splits) or 'none'}")
    qrels: dict[str, dict[str, float]] = {}
    for number, line in enumerate(qrels_path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split("\t")
        if number == 1 and fields[0] == "query-id" or not line.strip():
            continue
        if len(fields) != 3:
            raise DatasetError(f"{qrels_path}:{number}: expected query-id, corpus-id, score")
        qrels.setdefault(fields[0], {})[fields[1]] = float(fields[2])
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise DatasetError(f"{qrels_path}: {len(missing)} query ids are not in queries.jsonl "
                           f"(first: {missing[0]})")
    return BeirDataset(corpus, queries, qrels)


def _percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# Languages py3langid knows that its model confuses with a modern neighbour in the same script:
# Wu Chinese with Mandarin, Latin with English.
_CONFUSED_LANGUAGES = frozenset({"wuu", "la"})
_identifier: Any = None
_identifying = threading.Lock()


def detect_language(text: str) -> str:
    """The ISO 639-1 code of ``text``'s language (py3langid's naive Bayes model, Lui & Baldwin
    2012, "langid.py: an off-the-shelf language identification tool"); reliable on a
    paragraph, less so on a few words."""
    global _identifier
    with _identifying:
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
            identifier.set_languages([language for language in identifier.nb_classes
                                      if language not in _CONFUSED_LANGUAGES])
            _identifier = identifier
    return _identifier.classify(text)[0]


def query_languages(dataset: BeirDataset) -> dict[str, str]:
    """Each judged query's language: the most common language of its relevant documents (a
    document says more about its language than a question of a few words does)."""
    texts = {str(d["_id"]): " ".join(v for v in (d.get("title"), d.get("text"))
                                     if isinstance(v, str))
             for d in dataset.corpus if isinstance(d, dict) and "_id" in d}
    wanted = {doc for judged in dataset.qrels.values() for doc, gain in judged.items()
              if gain > 0 and texts.get(doc, "").strip()}
    # The first 1,000 characters are plenty for the language and keep big corpora quick.
    language = {doc: detect_language(texts[doc][:1000]) for doc in wanted}

    def language_of(query: str) -> str:
        found = Counter(language[doc] for doc, gain in dataset.qrels[query].items()
                        if gain > 0 and doc in language)
        return found.most_common(1)[0][0] if found else detect_language(dataset.queries[query])

    return {query: language_of(query) for query in dataset.qrels}


async def evaluate_retrieval(knowledge_base: Any, dataset: BeirDataset, *, mode: str
                             ) -> dict[str, Any]:
    """nDCG@10, MRR@10 and Recall@100 of ``knowledge_base`` (already holding the corpus) on
    ``dataset``'s queries, and query latency without query embedding: ``latency_*`` for
    top-10 searches (what an agent asks for), ``latency_*_k100`` for the top-100 the quality
    figures need. When the queries are in more than one language (``query_languages``),
    ``by_language`` gives the three figures and the query count for each language."""
    ids = list(dataset.qrels)
    languages = await asyncio.to_thread(query_languages, dataset)
    vectors: list[Any] = [None] * len(ids)
    if mode != "sparse":
        vectors = await knowledge_base.embeddings.aembed_documents(
            [dataset.queries[q] for q in ids])
    totals: dict[str, Counter] = {}
    latencies: dict[int, list[float]] = {10: [], 100: []}
    for qid, vector in zip(ids, vectors, strict=True):
        query, relevant = dataset.queries[qid], dataset.qrels[qid]
        ranked = {}
        for depth, timings in latencies.items():
            began = time.perf_counter()
            hits = await knowledge_base.search(query, depth, mode=mode, vector=vector)
            timings.append((time.perf_counter() - began) * 1000)
            # A document ranks where its best chunk does.
            ranked[depth] = list(dict.fromkeys(h.chunk.source for h in hits))
        figures = {"ndcg@10": ndcg(ranked[10], relevant, 10),
                   "mrr@10": reciprocal_rank(ranked[10], relevant, 10),
                   "recall@100": recall_at(ranked[100], relevant, 100), "queries": 1}
        for group in ("all", languages[qid]):
            totals.setdefault(group, Counter()).update(figures)
    report = {**_means(totals.pop("all")),
              "latency_p50_ms": round(_percentile(latencies[10], 50), 3),
              "latency_p99_ms": round(_percentile(latencies[10], 99), 3),
              "latency_p50_ms_k100": round(_percentile(latencies[100], 50), 3),
              "latency_p99_ms_k100": round(_percentile(latencies[100], 99), 3)}
    if len(totals) > 1:
        report["by_language"] = {language: _means(total) for language, total in
                                 sorted(totals.items(), key=lambda item: -item[1]["queries"])}
    return report


def _means(totals: Counter) -> dict[str, Any]:
    n = totals["queries"]
    return {**{name: round(total / n, 4) for name, total in totals.items() if name != "queries"},
            "queries": n}


async def run_beir(folder: str | Path, split: str, mode: str, *, embeddings: Any = None,
                   url: str | None = None, chunk_size: int = 512, **options: Any
                   ) -> dict[str, Any]:
    """Ingest a BEIR corpus (into ``url``, or a throwaway SQLite file), then evaluate.

    BEIR ranks whole documents: chunks of 512 tokens keep nearly every SciFact abstract whole
    (a document still ranks by its best chunk). Ingestion throughput excludes embedding time;
    a second ingestion of the unchanged corpus is timed too (it should write nothing).

    Real corpora hold documents without text (two of Cranfield's 1,400): those, and rows that
    are not a document (no ``_id``, text or title not a string), are skipped, not fatal; the
    report counts them (``documents_skipped``) and names the first few (``skipped``)."""
    from ponder.memory.knowledge.base import KnowledgeBase
    from ponder.memory.knowledge.chunking import Chunker
    from ponder.memory.knowledge.documents import Document
    from ponder.models import embedding_model_id

    dataset = load_beir(folder, split)
    documents, skipped = [], []
    for number, row in enumerate(dataset.corpus, 1):
        fields = row if isinstance(row, dict) else {}
        text, title = fields.get("text"), fields.get("title")
        if "_id" not in fields or not all(value is None or isinstance(value, str)
                                          for value in (text, title)):
            skipped.append(f"corpus.jsonl row {number}: not a document with an _id and text")
            continue
        documents.append(Document(text or "", str(row["_id"]), title or None))
    with tempfile.TemporaryDirectory(prefix="ponder-eval-") as scratch:
        kb = KnowledgeBase(url or f"sqlite:///{scratch}/eval.db", name="beir",
                           embeddings=embeddings, chunker=Chunker(chunk_size, 32), **options)
        try:
            first = await kb.add(documents, skip_errors=True)
            again = await kb.add(documents, skip_errors=True)
            result = await evaluate_retrieval(kb, dataset, mode=mode)
        finally:
            await kb.aclose()
    skipped += first.errors  # empty ones: "<_id>: the document is empty (no text to index)"
    indexing = first.seconds - first.embedding_seconds
    return {"dataset": Path(folder).name, "split": split, "mode": mode,
            "embedding_model": embedding_model_id(kb.embeddings) if kb.embeddings else None,
            **result, "documents": len(dataset.corpus),
            "documents_indexed": first.added + first.updated + first.unchanged,
            "documents_skipped": len(skipped), "skipped": skipped[:10], "chunks": first.chunks,
            "ingest_chunks_per_s": round(first.chunks / indexing) if first.chunks else None,
            "ingest_seconds": round(first.seconds, 3),
            "embedding_seconds": round(first.embedding_seconds, 3),
            "reingest_seconds": round(again.seconds, 3),
            "reingest_written": again.added + again.updated}
