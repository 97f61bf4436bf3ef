"""Self-Instruct (Wang et al. 2023): grow an instruction-tuning data set from a few seed tasks.

Each round, the model **generates** new instructions from examples drawn from the task pool
(six human-written seeds and two of its own); **classifies** each (a classification task has a
small set of output labels); **writes instances** for it, output-first for classification (so
every label is covered) and input-first otherwise; then a **filter** drops instructions too close
to one in the pool (ROUGE-L above ``similarity``), too short or too long, about what a text
model cannot do (images, files, audio...), or without instances. Accepted tasks join the pool
and are appended to the JSONL file, one task a line:
``{"instruction", "is_classification", "instances": [{"input", "output"}]}``.

    graph = self_instruct(model, "seed_tasks.jsonl", "generated.jsonl", target=1000)
    await graph.ainvoke({}, {"recursion_limit": 10_000})
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from ponder.agents.planning.base import ReasoningTrace
from ponder.config import ConfigurationError
from ponder.memory.knowledge.evaluation import rouge_l
from ponder.models import as_chat_model, list_items

GENERATE_PROMPT = "Come up with a series of tasks:\n{examples}\n{next}."

CLASSIFY_PROMPT = """Can the following task be regarded as a classification task with a small \
set of possible output labels?
Task: {instruction}
Reply Yes or No."""

OUTPUT_FIRST_PROMPT = """Given the classification task definition and its class labels, write \
an input for each label. Write each as:
Class label: ...
Input: ...

Task: {instruction}"""

INPUT_FIRST_PROMPT = """Come up with examples for the following task. Write each as:
Input: ... (or "Input: <noinput>" when the task needs none)
Output: ...

Task: {instruction}"""

# What a text model cannot do, after the paper's filter.
UNSUITABLE = re.compile(r"\b(images?|graphs?|pictures?|files?|maps?|draw|plot|go to|videos?|"
                        r"audio|music|flowchart|diagram)\b", re.IGNORECASE)


class Task(TypedDict):
    """An instruction-tuning task: the instruction, whether it is classification, and its
    ``{"input", "output"}`` instances."""
    instruction: str
    is_classification: bool
    instances: list[dict[str, str]]


class SelfInstructState(TypedDict):
    """The state of ``self_instruct``: the tasks accepted so far, this round's candidates, the
    rounds."""
    generated: NotRequired[list[Task]]     # accepted so far (also in the JSONL file)
    candidates: NotRequired[list[Task]]    # this round's, before filtering
    rounds: NotRequired[int]


def load_seed_tasks(path: str | Path) -> list[Task]:
    """Seed tasks from JSONL: ``instruction`` and ``instances`` (``is_classification``
    optional); Self-Instruct's ``seed_tasks.jsonl`` works as it is."""
    tasks = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            tasks.append(Task(instruction=str(raw["instruction"]),
                              is_classification=bool(raw.get("is_classification", False)),
                              instances=list(raw.get("instances", []))))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"{path}, line {number}: not a seed task ({exc}): each "
                                     'line is {"instruction": ..., "instances": [...]}') from None
    if not tasks:
        raise ConfigurationError(f"{path} holds no seed tasks")
    return tasks


def self_instruct(model: BaseChatModel | str, seed_tasks: str | Path | list[Task],
                  output: str | Path, *, target: int = 100, per_round: int = 8,
                  max_rounds: int = 100, similarity: float = 0.7, seed: int = 0,
                  checkpointer: BaseCheckpointSaver | None = None,
                  name: str = "self_instruct") -> CompiledStateGraph:
    """A graph that grows ``output`` (JSONL, appended to) from ``seed_tasks`` until ``target`` tasks
    are accepted or ``max_rounds`` rounds have run.

    Self-Instruct: Wang et al. 2023, "Self-Instruct: Aligning Language Models with Self-Generated
    Instructions". Each round asks for up to ``per_round`` instructions (examples sampled with
    ``seed`` + the round number), then one call per candidate to classify it and one to write its
    instances; a candidate whose ROUGE-L with a task in the pool exceeds ``similarity`` is dropped.
    ``seed_tasks`` is a JSONL path (see ``load_seed_tasks``: ConfigurationError for a bad line) or a
    list of Tasks. Run it with a high ``recursion_limit``: four steps a round.
    """
    model = as_chat_model(model)
    seeds = load_seed_tasks(seed_tasks) if isinstance(seed_tasks, str | Path) else seed_tasks
    output = Path(output)

    async def generate(state: SelfInstructState) -> dict[str, Any]:
        rounds, generated = state.get("rounds", 0), state.get("generated", [])
        sampler = random.Random(seed + rounds)
        examples = sampler.sample(seeds, min(6, len(seeds)))
        examples += sampler.sample(generated, min(2, len(generated)))
        listed = "\n".join(f"{i}. {t['instruction']}" for i, t in enumerate(examples, 1))
        reply = await ReasoningTrace(model).ask("generate", GENERATE_PROMPT.format(
            examples=listed, next=len(examples) + 1))
        # The model continues the numbering: its first line has no number of its own.
        lines = reply.text.strip().splitlines()
        if lines and not re.match(r"^\s*\d+[.)]", lines[0]):
            lines[0] = f"{len(examples) + 1}. {lines[0]}"
        instructions = list_items("\n".join(lines), per_round)
        return {"generated": generated, "rounds": rounds + 1,
                "candidates": [Task(instruction=i, is_classification=False, instances=[])
                               for i in instructions]}

    async def classify(state: SelfInstructState) -> dict[str, Any]:
        async def classification(task: Task) -> Task:
            reply = await ReasoningTrace(model).ask("classify", CLASSIFY_PROMPT.format(
                instruction=task["instruction"]))
            return {**task, "is_classification": reply.text.strip().lower().startswith("yes")}

        return {"candidates": list(await asyncio.gather(
            *(classification(t) for t in state["candidates"] if _suitable(t["instruction"]))))}

    async def write_instances(state: SelfInstructState) -> dict[str, Any]:
        async def instances(task: Task) -> Task:
            prompt = OUTPUT_FIRST_PROMPT if task["is_classification"] else INPUT_FIRST_PROMPT
            reply = await ReasoningTrace(model).ask("instances", prompt.format(
                instruction=task["instruction"]))
            return {**task, "instances": _parse_instances(reply.text, task["is_classification"])}

        return {"candidates": list(await asyncio.gather(
            *(instances(t) for t in state["candidates"])))}

    async def keep(state: SelfInstructState) -> dict[str, Any]:
        pool = [t["instruction"] for t in seeds + state["generated"]]
        accepted = []
        for task in state["candidates"]:
            if not task["instances"] or any(
                    rouge_l(task["instruction"], known) > similarity for known in pool):
                continue
            accepted.append(task)
            pool.append(task["instruction"])
        accepted = accepted[:max(0, target - len(state["generated"]))]
        if accepted:
            await asyncio.to_thread(_append, output, accepted)
        return {"generated": state["generated"] + accepted, "candidates": []}

    async def after_keep(state: SelfInstructState) -> str:
        done = len(state["generated"]) >= target or state["rounds"] >= max_rounds
        return END if done else "generate"

    builder = StateGraph(SelfInstructState)
    builder.add_node("generate", generate)
    builder.add_node("classify", classify)
    builder.add_node("write_instances", write_instances)
    builder.add_node("keep", keep)
    builder.add_edge(START, "generate")
    builder.add_edge("generate", "classify")
    builder.add_edge("classify", "write_instances")
    builder.add_edge("write_instances", "keep")
    builder.add_conditional_edges("keep", after_keep, ["generate", END])
    return builder.compile(checkpointer=checkpointer, name=name)


def _suitable(instruction: str) -> bool:
    words = instruction.split()
    return (3 <= len(words) <= 150 and not UNSUITABLE.search(instruction)
            and instruction[0].isascii() and instruction[0].isalnum())


def _parse_instances(text: str, classification: bool) -> list[dict[str, str]]:
    first, second = ("Class label", "Input") if classification else ("Input", "Output")
    pattern = re.compile(rf"{first}:\s*(.*?)\s*\n\s*{second}:\s*(.*?)\s*(?=\n\s*(?:{first}:|"
                         rf"Example\b)|\Z)", re.DOTALL | re.IGNORECASE)
    found = []
    for a, b in pattern.findall(text):
        instance = ({"input": b, "output": a} if classification else
                    {"input": "" if a.strip() == "<noinput>" else a, "output": b})
        if instance["output"] and instance not in found:
            found.append(instance)
    return found


def _append(path: Path, tasks: list[Task]) -> None:
    with path.open("a", encoding="utf-8") as file:
        for task in tasks:
            file.write(json.dumps(task, ensure_ascii=False) + "\n")
