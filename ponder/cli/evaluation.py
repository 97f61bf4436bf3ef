"""`ponder eval`: reasoning methods, text-to-SQL and retrieval on standard data sets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import typer
from rich.markup import escape

from ponder.cli.common import (
    JSON,
    app,
    check_mode,
    console,
    errors,
)
from ponder.config import ConfigurationError, Settings
from ponder.models import chat_model

eval_app = typer.Typer(help="Measure reasoning methods on standard data sets.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _print_report(report, as_json: bool, model: str | None) -> None:
    data = {**report.as_dict(), "model": model or Settings.from_env().model}
    if as_json:
        print(json.dumps(data))
        return
    console.print(f"{data['task']} / {data['method']}: accuracy {data['accuracy']:.1%} "
                  f"({data['correct']}/{data['n']}), {data['calls']} calls, "
                  f"{data['total_tokens']} tokens, {data['wall_s']} s")
    for error in data["errors"][:5]:
        errors.print(f"[yellow]{escape(error)}[/]")


@eval_app.command("game24")
def eval_game24(
    model: str | None = typer.Option(None, "--model", help="provider:name (default PONDER_MODEL)"),
    method: str = typer.Option("tot", "--method", help="io, cot, sc or tot (or their full "
                               "names: ponder.agents.planning.registry)"),
    limit: int = typer.Option(10, "--limit", min=1, help="How many puzzles."),
    start: int = typer.Option(900, "--start", min=0, help="First row (the ToT paper: 900)."),
    data: str = typer.Option("game24.csv", "--data", help="The Game of 24 CSV."),
    k: int = typer.Option(5, "--k", min=1, help="Samples for sc."),
    breadth: int = typer.Option(5, "--breadth", min=1, help="ToT breadth b."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Puzzles at once."),
    as_json: bool = JSON,
) -> None:
    """Game of 24: accuracy of io, cot, sc or tot (exact arithmetic checks the answers), the
    planners of the agent specs' names."""
    from ponder.agents.planning.evaluation import evaluate_game24, load_game24

    puzzles = load_game24(data, start, limit)
    report = asyncio.run(evaluate_game24(chat_model(model), method, puzzles, k=k,
                                         breadth=breadth, concurrency=concurrency))
    _print_report(report, as_json, model)


@eval_app.command("gsm8k")
def eval_gsm8k(
    model: str | None = typer.Option(None, "--model", help="provider:name (default PONDER_MODEL)"),
    method: str = typer.Option("cot", "--method", help="io, cot, zero-shot-cot or sc (or "
                               "their full names: ponder.agents.planning.registry)"),
    limit: int = typer.Option(50, "--limit", min=1, help="How many problems."),
    start: int = typer.Option(0, "--start", min=0, help="First problem."),
    data: str = typer.Option("gsm8k_test.jsonl", "--data", help="The GSM8K test JSONL."),
    k: int = typer.Option(5, "--k", min=1, help="Paths for sc."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Problems at once."),
    as_json: bool = JSON,
) -> None:
    """GSM8K: accuracy of io or cot (8-shot), zero-shot-cot or sc against the gold answers."""
    from ponder.agents.planning.evaluation import evaluate_gsm8k, load_gsm8k

    items = load_gsm8k(data, start, limit)
    report = asyncio.run(evaluate_gsm8k(chat_model(model), method, items, k=k,
                                        concurrency=concurrency))
    _print_report(report, as_json, model)


@eval_app.command("sql")
def eval_sql(
    db: str = typer.Option(..., "--db", help="Database URL, e.g. sqlite:///chinook.sqlite"),
    questions: str = typer.Option(..., "--questions", help="JSONL of question and gold sql."),
    model: str | None = typer.Option(None, "--model", help="provider:name (default PONDER_MODEL)"),
    candidates: int = typer.Option(5, "--candidates", min=1, help="SQL samples per question."),
    as_json: bool = JSON,
) -> None:
    """Text-to-SQL execution accuracy on your own question/gold-SQL pairs."""
    from ponder.tools.sql.evaluation import evaluate_sql, load_questions

    items = load_questions(questions)
    report = asyncio.run(evaluate_sql(db, items, chat_model(model), candidates=candidates))
    if as_json:
        print(json.dumps(report))
        return
    console.print(f"execution accuracy {report['execution_accuracy']:.1%} "
                  f"({report['correct']}/{report['n']}), {report['calls']} calls, "
                  f"{report['wall_s']} s")


@eval_app.command("retrieval")
def eval_retrieval(
    dataset: str = typer.Option(..., "--dataset", help="A BEIR folder: corpus.jsonl, "
                                "queries.jsonl, qrels/<split>.tsv."),
    split: str = typer.Option("test", "--split", help="The qrels split, e.g. train or test."),
    mode: str = typer.Option("hybrid", "--mode", help="sparse, dense or hybrid"),
    embeddings: str | None = typer.Option(None, "--embeddings", help="provider:model, or local "
                                          "(the bundled all-MiniLM-L6-v2); default "
                                          "PONDER_EMBEDDINGS"),
    database: str | None = typer.Option(None, "--database", help="Keep the index in this "
                                        "database URL (a second run re-embeds nothing); "
                                        "default: a throwaway SQLite file."),
    fusion: str = typer.Option("weighted", "--fusion", help="Hybrid fusion: weighted or rrf."),
    weights: str | None = typer.Option(None, "--weights", help="Hybrid weights "
                                       "SPARSE,DENSE (default 1,0.7)"),
    chunk_size: int = typer.Option(512, "--chunk-size", min=16, help="Tokens per chunk."),
    as_json: bool = JSON,
) -> None:
    """Retrieval quality and speed on a BEIR data set: nDCG@10, MRR@10, Recall@100, query
    latency (without query embedding) and ingestion throughput (without embedding)."""
    from ponder.memory.knowledge.evaluation import run_beir
    from ponder.models import embeddings as make_embeddings

    check_mode(mode)
    if fusion not in ("weighted", "rrf"):
        raise ConfigurationError(f"--fusion {fusion!r}: use weighted or rrf")
    options: dict[str, Any] = {"fusion": fusion}
    if weights:
        options["weights"] = _weights(weights)
    spec = embeddings or Settings.from_env().embeddings
    model = make_embeddings(spec or "local") if spec or mode != "sparse" else None
    report = asyncio.run(run_beir(dataset, split, mode, embeddings=model, url=database,
                                  chunk_size=chunk_size, **options))
    if as_json:
        print(json.dumps(report))
        return
    console.print(f"{report['dataset']} {report['split']} / {mode}: nDCG@10 {report['ndcg@10']}"
                  f", MRR@10 {report['mrr@10']}, Recall@100 {report['recall@100']} over "
                  f"{report['queries']} queries; latency p50 {report['latency_p50_ms']} ms, p99 "
                  f"{report['latency_p99_ms']} ms; ingestion {report['ingest_chunks_per_s']} "
                  f"chunks/s")
    for language, figures in report.get("by_language", {}).items():
        console.print(f"  {language}: nDCG@10 {figures['ndcg@10']}, MRR@10 {figures['mrr@10']}, "
                      f"Recall@100 {figures['recall@100']} over {figures['queries']} queries")
    if report["documents_skipped"]:
        errors.print(f"[yellow]{report['documents_skipped']} of {report['documents']} documents "
                     f"skipped (empty or unreadable), e.g. {escape(report['skipped'][0])}[/]")


def _weights(text: str) -> tuple[float, float]:
    try:
        sparse, dense = (float(w) for w in text.split(","))
    except ValueError:
        raise ConfigurationError(f"--weights {text!r}: write two numbers, e.g. 1,0.7") from None
    return sparse, dense
