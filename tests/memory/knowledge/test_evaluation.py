"""Metrics against hand-worked values, the LLM evidence judge, and the BEIR harness end to end
(`ponder eval retrieval`) on a slice of SciFact."""

import json
import math

import pytest
from typer.testing import CliRunner

from ponder.cli import app
from ponder.memory.knowledge.evaluation import (
    DatasetError,
    average_precision,
    bleu,
    exact_match,
    flesch_reading_ease,
    information_coverage,
    judge_evidence,
    load_beir,
    ndcg,
    precision_at,
    recall_at,
    reciprocal_rank,
    redundancy_ratio,
    rouge_l,
    rouge_n,
    run_beir,
    semantic_diversity,
    token_f1,
)
from ponder.testing import HashingEmbeddings, ScriptedChatModel
from tests.helpers.data import DATA

RANKED = ["d1", "d2", "d3", "d4", "d5"]
RELEVANT = {"d2": 1, "d4": 2, "d9": 1}


def test_retrieval_metrics():
    assert reciprocal_rank(RANKED, RELEVANT) == 0.5
    assert reciprocal_rank(RANKED, RELEVANT, k=1) == 0.0
    assert average_precision(RANKED, RELEVANT) == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert precision_at(RANKED, RELEVANT, 4) == 0.5
    assert recall_at(RANKED, RELEVANT, 5) == pytest.approx(2 / 3)
    ideal = 2 + 1 / math.log2(3) + 1 / math.log2(4)
    actual = 1 / math.log2(3) + 2 / math.log2(5)
    assert ndcg(RANKED, RELEVANT, 10) == pytest.approx(actual / ideal)
    assert ndcg(["d4", "d2", "d9"], RELEVANT, 3) == pytest.approx(1.0)


def test_answer_metrics():
    assert exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert token_f1("the big red tea pot", "red tea kettle") == pytest.approx(2 * (2 / 4) * (2 / 3)
                                                                             / (2 / 4 + 2 / 3))
    assert bleu("green tea is brewed at low heat", "green tea is brewed at low heat") == \
        pytest.approx(1.0)
    assert 0 < bleu("green tea is brewed cool", "green tea is brewed at low heat") < 1
    assert rouge_n("tea cup", "tea pot", 1) == pytest.approx(0.5)
    assert rouge_n("tea cup", "tea pot", 2) == 0.0
    # LCS of "a b c d" and "a c d e" is "a c d": P = R = 3/4.
    assert rouge_l("a1 b1 c1 d1", "a1 c1 d1 e1") == pytest.approx(0.75)


def test_generated_text_checks():
    simple = "The cat sat. The dog ran."
    dense = ("Notwithstanding considerable institutional heterogeneity, organisational "
             "representatives systematically underestimated implementation complexity.")
    assert flesch_reading_ease(simple) > 90 > 0 > flesch_reading_ease(dense)
    assert redundancy_ratio("tea is good tea is good") == pytest.approx(1 / 4)
    assert redundancy_ratio("each word here is new") == 0.0
    facts = ["Sencha is steamed", "Matcha is ground into powder", "Assam is malty"]
    assert information_coverage("Sencha gets steamed; matcha is ground to a powder.", facts) \
        == pytest.approx(2 / 3)


async def test_semantic_diversity_is_one_minus_cosine():
    embeddings = HashingEmbeddings(256)
    same = await semantic_diversity(["green tea", "green tea"], embeddings)
    apart = await semantic_diversity(["green tea", "bicycle repair manual"], embeddings)
    assert same == pytest.approx(0.0, abs=1e-9) and apart > 0.5


async def test_evidence_support_and_misleading_rates_are_judged_per_claim():
    def judge(messages):
        claim = messages[-1].content.rsplit("Claim: ", 1)[1]
        return {"Sencha is green.": "SUPPORTED", "Sencha is from Japan.": "SUPPORTED",
                "Sencha is fermented.": "CONTRADICTED"}.get(claim, "UNSUPPORTED")

    result = await judge_evidence(ScriptedChatModel(replies=judge),
                                  "Sencha is green. Sencha is from Japan. Sencha is fermented. "
                                  "It costs 5 euros.", ["Sencha is a steamed Japanese green tea."])
    assert (result.claims, result.supported_rate, result.misleading_rate) == (4, 0.5, 0.25)


@pytest.fixture(scope="module")
def scifact_slice(tmp_path_factory):
    """SciFact's first 60 train queries with their relevant abstracts and 400 others."""
    source = DATA / "scifact"
    assert source.is_dir(), f"SciFact is missing: expected {source}"
    folder = tmp_path_factory.mktemp("scifact-slice")
    qrels_lines = (source / "qrels" / "train.tsv").read_text().splitlines()
    kept = qrels_lines[1:80]
    wanted_queries = {line.split("\t")[0] for line in kept}
    wanted_docs = {line.split("\t")[1] for line in kept}
    corpus = [json.loads(line) for line in (source / "corpus.jsonl").open()]
    chosen = [d for d in corpus if d["_id"] in wanted_docs] + \
             [d for d in corpus if d["_id"] not in wanted_docs][:400]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in chosen))
    queries = [json.loads(line) for line in (source / "queries.jsonl").open()]
    (folder / "queries.jsonl").write_text("\n".join(
        json.dumps(q) for q in queries if q["_id"] in wanted_queries))
    (folder / "qrels").mkdir()
    (folder / "qrels" / "train.tsv").write_text("\n".join([qrels_lines[0], *kept]))
    return folder


async def test_beir_harness_measures_quality_speed_and_idempotence(scifact_slice):
    report = await run_beir(scifact_slice, "train", "hybrid", embeddings=HashingEmbeddings(256))
    assert report["queries"] == len(load_beir(scifact_slice, "train").qrels)
    assert report["documents"] > 400 and report["chunks"] >= report["documents"]
    assert report["reingest_written"] == 0
    assert report["reingest_seconds"] < report["ingest_seconds"]
    assert report["ndcg@10"] > 0.5 and report["recall@100"] > 0.8  # BM25 carries this slice
    assert 0 < report["latency_p50_ms"] <= report["latency_p99_ms"]
    assert report["embedding_model"] == "testing:hashing-256"


def test_ponder_eval_retrieval_prints_the_contracted_keys(scifact_slice):
    result = CliRunner().invoke(app, ["eval", "retrieval", "--dataset", str(scifact_slice),
                                      "--split", "train", "--mode", "sparse", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for key in ("ndcg@10", "mrr@10", "recall@100", "latency_p50_ms", "latency_p99_ms",
                "ingest_chunks_per_s"):
        assert key in report
    assert report["mode"] == "sparse" and report["ndcg@10"] > 0.5


def test_bad_datasets_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="corpus.jsonl is missing"):
        load_beir(tmp_path, "test")
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "x"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\nnot json\n')
    with pytest.raises(DatasetError, match="queries.jsonl:2: not JSON"):
        load_beir(tmp_path, "test")
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq2\t1\t1\n")
    with pytest.raises(DatasetError, match="test.tsv is missing: splits here: dev"):
        load_beir(tmp_path, "test")
    with pytest.raises(DatasetError, match="1 query ids are not in queries.jsonl"):
        load_beir(tmp_path, "dev")


def _beir_slice(name: str, split: str, pairs: int) -> tuple[list, list, list[str]]:
    """The first ``pairs`` judgements of a BEIR set, with their queries and documents."""
    source = DATA / name
    assert source.is_dir(), f"{name} is missing: expected {source}"
    kept = (source / "qrels" / f"{split}.tsv").read_text().splitlines()[1:pairs + 1]
    queries = {line.split("\t")[0] for line in kept}
    documents = {line.split("\t")[1] for line in kept}
    return ([d for d in map(json.loads, (source / "corpus.jsonl").open()) if d["_id"] in documents],
            [q for q in map(json.loads, (source / "queries.jsonl").open()) if q["_id"] in queries],
            kept)


async def test_a_corpus_of_two_languages_is_reported_per_language(tmp_path):
    english = _beir_slice("scifact", "train", 30)
    chinese = _beir_slice("cmrc_trial", "test", 30)
    (tmp_path / "qrels").mkdir()
    for name, rows in (("corpus.jsonl", english[0] + chinese[0]),
                       ("queries.jsonl", english[1] + chinese[1])):
        (tmp_path / name).write_text("\n".join(json.dumps(row) for row in rows))
    (tmp_path / "qrels" / "test.tsv").write_text("\n".join(
        ["query-id\tcorpus-id\tscore", *english[2], *chinese[2]]))
    report = await run_beir(tmp_path, "test", "sparse")
    by_language = report["by_language"]
    assert list(by_language) in (["en", "zh"], ["zh", "en"])
    assert by_language["en"]["queries"] == len(english[1])
    assert by_language["zh"]["queries"] == len(chinese[1])
    assert report["queries"] == len(english[1]) + len(chinese[1])
    # Chinese questions find their paragraphs by words (character bigrams), English claims theirs.
    assert by_language["zh"]["ndcg@10"] > 0.9 and by_language["en"]["ndcg@10"] > 0.5
    one_language = await run_beir(DATA / "cmrc_trial", "test", "sparse")
    assert "by_language" not in one_language and one_language["ndcg@10"] >= 0.98


def _corpus_with_empty_and_unreadable_documents(folder):
    rows = [
        {"_id": "1", "title": "Kettles", "text": "Kettles carry a two year warranty."},
        {"_id": "2", "title": "Refunds", "text": "Refunds reach the card within 14 days."},
        {"_id": "471", "title": "", "text": ""},  # as in Cranfield: nothing to index
        {"_id": "472", "text": "   \n\t "},  # only whitespace
        {"_id": "473", "title": "Shipping", "text": ["not", "a", "string"]},  # unreadable
        ["not", "an", "object"],
        {"title": "no id", "text": "an orphan paragraph"},
    ]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "kettle warranty"}\n'
                                          '{"_id": "q2", "text": "refund to card"}\n')
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t1\t1\nq2\t2\t1\n")
    return folder


async def test_empty_and_unreadable_documents_are_skipped_and_counted(tmp_path):
    folder = _corpus_with_empty_and_unreadable_documents(tmp_path)
    report = await run_beir(folder, "test", "sparse")
    assert report["documents"] == 7
    assert report["documents_indexed"] == 2 and report["documents_skipped"] == 5
    assert report["skipped"] == [
        "corpus.jsonl row 5: not a document with an _id and text",
        "corpus.jsonl row 6: not a document with an _id and text",
        "corpus.jsonl row 7: not a document with an _id and text",
        "471: the document is empty (no text to index)",
        "472: the document is empty (no text to index)",
    ]
    assert report["queries"] == 2 and report["ndcg@10"] == 1.0 and report["mrr@10"] == 1.0
    assert report["reingest_written"] == 0


def test_ponder_eval_retrieval_reports_skipped_documents(tmp_path):
    folder = _corpus_with_empty_and_unreadable_documents(tmp_path)
    args = ["eval", "retrieval", "--dataset", str(folder), "--mode", "sparse"]
    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["documents_skipped"] == 5
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0, shown.output
    assert "5 of 7 documents skipped (empty or unreadable), e.g. corpus.jsonl row 5" in \
        shown.output
