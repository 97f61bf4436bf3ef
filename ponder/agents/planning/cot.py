"""Chain-of-Thought: few-shot (with examples chosen per question), Zero-Shot, and Auto-CoT.

- ``ChainOfThought``: worked examples in the prompt, chosen from a pool by similarity to the
  question (nearest neighbours in embedding space, KATE; the nearest goes last, next to the
  question), by diversity (one per k-means cluster), or all of them; written in a
  ``PromptFormat`` (the CoT paper's "Q: ... A: ... The answer is X." by default). With examples
  that give answers only (``ANSWERS_ONLY``), it is standard (input-output) prompting.
- ``ZeroShotCoT``: "Let's think step by step." for the reasoning, then the reasoning plus an
  answer trigger ("Therefore, the answer is") to extract the answer.
- ``AutoCoT``: clusters a question bank, picks one question per cluster under the published
  heuristics (at most 60 tokens, a rationale of at most 5 steps), writes its rationale with
  Zero-Shot-CoT, and uses those as the examples of a few-shot prompt.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, SystemMessage

from ponder.agents.planning.answers import KINDS, extract_answer
from ponder.agents.planning.base import AnsweringPlanner, Budget, ReasoningTrace, Solution
from ponder.models import as_chat_model
from ponder.similarity import cosine

TRIGGERS = {
    "number": "Therefore, the answer (arabic numerals) is",
    "option": "Therefore, among A through E, the answer is",
    "text": "Therefore, the answer is",
    "json": "Therefore, the answer as JSON is",
    "expression": "Therefore, the answer (an arithmetic expression) is",
}


@dataclass(frozen=True)
class Example:
    """A worked example: a question, its step-by-step rationale, and the answer."""

    question: str
    rationale: str
    answer: str


@dataclass(frozen=True)
class PromptFormat:
    """How a few-shot prompt is written, and where its reply's answer is.

    The prompt is the ``instruction`` (if any), each worked example written by ``example`` (with
    ``{question}``, ``{rationale}`` and ``{answer}``), then the question written by ``question``,
    joined by ``separator``. The answer is read after the first ``trigger`` in the reply. The
    default is the Chain-of-Thought paper's "Q: ... A: rationale The answer is X.".
    """

    example: str = "Q: {question}\nA: {rationale} The answer is {answer}."
    question: str = "Q: {question}\nA:"
    instruction: str = ""
    separator: str = "\n\n"
    trigger: str = "The answer is"

    def render(self, examples: Sequence[Example], question: str) -> str:
        """The prompt for ``question`` with ``examples``, in order."""
        shots = [self.example.format(question=e.question, rationale=e.rationale, answer=e.answer)
                 for e in examples]
        head = [self.instruction] if self.instruction else []
        return self.separator.join([*head, *shots, self.question.format(question=question)])


# Standard prompting (Brown et al. 2020; the CoT paper's baseline): the examples' answers alone.
ANSWERS_ONLY = PromptFormat(example="Q: {question}\nA: The answer is {answer}.")


def _check_kind(answer: str) -> str:
    if answer not in KINDS:
        raise ValueError(f"unknown answer kind {answer!r}: use one of {', '.join(KINDS)}")
    return answer


class ChainOfThought(AnsweringPlanner):
    """Few-shot Chain-of-Thought. ``select``: "similarity" (KATE), "diversity" or "all".

    ``answer`` is the answer kind (see ``answers.KINDS``); ``prompt_format`` writes the prompt and
    says where the answer is (default: "Q: ... A: ... The answer is X.").
    """

    def __init__(self, examples: Sequence[Example], *, k: int = 8, select: str = "all",
                 embeddings: Embeddings | None = None, answer: str = "number",
                 prompt_format: PromptFormat | None = None,
                 budget: Budget | None = None) -> None:
        if select not in ("similarity", "diversity", "all"):
            raise ValueError(f"select must be 'similarity', 'diversity' or 'all', not {select!r}")
        if select != "all" and embeddings is None:
            raise ValueError(f"select={select!r} needs embeddings=... to compare questions")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.examples = list(examples)
        self.k, self.select, self.embeddings = k, select, embeddings
        self.answer = _check_kind(answer)
        self.prompt_format = prompt_format or PromptFormat()
        self.budget = budget
        self._vectors: list[list[float]] | None = None
        self._diverse: list[Example] | None = None

    async def _pool_vectors(self) -> list[list[float]]:
        if self._vectors is None:
            self._vectors = await self.embeddings.aembed_documents(
                [e.question for e in self.examples])
        return self._vectors

    async def choose(self, question: str) -> list[Example]:
        """The examples for this question, in prompt order."""
        if self.select == "all" or len(self.examples) <= self.k:
            return self.examples
        vectors = await self._pool_vectors()
        if self.select == "similarity":
            query = await self.embeddings.aembed_query(question)
            ranked = sorted(range(len(vectors)), key=lambda i: cosine(query, vectors[i]))
            return [self.examples[i] for i in ranked[-self.k:]]  # most similar last
        if self._diverse is None:  # k-means is CPU work: off the event loop
            chosen = await asyncio.to_thread(representatives, vectors, self.k)
            self._diverse = [self.examples[i] for i in chosen]
        return self._diverse

    def prompt(self, question: str, examples: Sequence[Example]) -> str:
        """The few-shot prompt for ``question`` with ``examples``, in the prompt format."""
        return self.prompt_format.render(examples, question)

    def extract(self, text: str) -> str | None:
        """The answer in a reply: the first after the format's trigger, else the last one."""
        return extract_answer(text, self.answer, trigger=self.prompt_format.trigger)

    async def reason(self, trace: ReasoningTrace, question: str, **kwargs
                     ) -> tuple[AIMessage, str | None]:
        """One reasoning path: the model's reasoning and the answer extracted from it."""
        examples = await self.choose(question)
        reply = await trace.ask("cot", self.prompt(question, examples), **kwargs)
        return reply, self.extract(reply.text)

    async def solve(self, question: str, model: BaseChatModel | str | None = None, *,
                    system: SystemMessage | None = None) -> Solution:
        """One reasoning path over the chosen examples; the answer follows "The answer is".

        Few-shot CoT: Wei et al. 2022, "Chain-of-Thought Prompting Elicits Reasoning in Large
        Language Models"; similarity selection: KATE, Liu et al. 2022, "What Makes Good In-Context
        Examples for GPT-3?". Raises BudgetExceeded when the budget allows no call; the Solution's
        error says so when no answer could be extracted.
        """
        trace = ReasoningTrace(as_chat_model(model), system, self.budget)
        _, answer = await self.reason(trace, question)
        return trace.solution(answer, error=None if answer else "no answer in the reasoning")


class ZeroShotCoT(AnsweringPlanner):
    """Two-stage Zero-Shot-CoT (Kojima et al.): reason, then extract with an answer trigger."""

    def __init__(self, *, answer: str = "number", trigger: str | None = None,
                 budget: Budget | None = None) -> None:
        self.answer = _check_kind(answer)
        self.trigger = trigger or TRIGGERS[answer]
        self.budget = budget

    async def reason(self, trace: ReasoningTrace, question: str, **kwargs
                     ) -> tuple[AIMessage, str | None]:
        """One reasoning path: the model's reasoning and the answer extracted from it."""
        opening = f"Q: {question}\nA: Let's think step by step."
        reasoning = await trace.ask("reason", opening, **kwargs)
        # The second stage is deterministic: it reads the answer off the reasoning.
        stage_two = {k: v for k, v in kwargs.items() if k != "logprobs"}
        stage_two["temperature"] = 0.0
        extraction = await trace.ask("extract", f"{opening} {reasoning.text}\n{self.trigger}",
                                     **stage_two)
        # The reply continues the trigger, so its first answer is the one (Kojima et al.).
        return reasoning, extract_answer(extraction.text, self.answer, first=True)

    async def solve(self, question: str, model: BaseChatModel | str | None = None, *,
                    system: SystemMessage | None = None) -> Solution:
        """Reason, then extract the answer (two model calls, Kojima et al. 2022, "Large Language
        Models are Zero-Shot Reasoners").

        ``details["reasoning"]`` holds the first stage's text. Raises BudgetExceeded when the budget
        does not allow the calls.
        """
        trace = ReasoningTrace(as_chat_model(model), system, self.budget)
        reasoning, answer = await self.reason(trace, question)
        return trace.solution(answer, reasoning=reasoning.text,
                              error=None if answer else "the extraction stage gave no answer")


class AutoCoT(AnsweringPlanner):
    """Auto-CoT (Zhang et al.): demonstrations built from a question bank, one per cluster."""

    def __init__(self, questions: Sequence[str], embeddings: Embeddings, *, clusters: int = 8,
                 max_question_tokens: int = 60, max_rationale_steps: int = 5,
                 answer: str = "number", budget: Budget | None = None) -> None:
        if clusters < 1:
            raise ValueError(f"clusters must be at least 1, got {clusters}")
        if not questions:
            raise ValueError("AutoCoT needs a non-empty question bank")
        self.questions = list(questions)
        self.embeddings = embeddings
        self.clusters = min(clusters, len(self.questions))
        self.max_question_tokens = max_question_tokens
        self.max_rationale_steps = max_rationale_steps
        self.answer = _check_kind(answer)
        self.budget = budget
        self.demos: list[Example] | None = None
        self.build_steps: list = []  # the model calls that wrote the demonstrations
        self._lock = asyncio.Lock()

    def candidates(self, vectors: list[list[float]]) -> list[list[int]]:
        """Per cluster, the short-enough questions, nearest to the centroid first."""
        centroids, labels = kmeans(vectors, self.clusters)
        ordered = []
        for c, centroid in enumerate(centroids):
            members = [i for i, label in enumerate(labels) if label == c]
            members.sort(key=lambda i: -cosine(vectors[i], centroid))
            ordered.append([i for i in members
                            if len(self.questions[i].split()) <= self.max_question_tokens])
        return ordered

    async def build(self, model: BaseChatModel, system: SystemMessage | None = None
                    ) -> list[Example]:
        """Write the demonstrations (once; later calls reuse them)."""
        async with self._lock:
            if self.demos is None:
                vectors = await self.embeddings.aembed_documents(self.questions)
                zero_shot = ZeroShotCoT(answer=self.answer)
                trace = ReasoningTrace(model, system, self.budget)

                async def demo_for(cluster: list[int]) -> Example | None:
                    for i in cluster:  # nearest first; the first that passes the heuristics wins
                        reply, answer = await zero_shot.reason(trace, self.questions[i])
                        rationale = reply.text.strip()
                        if answer is not None and steps_in(rationale) <= self.max_rationale_steps:
                            return Example(self.questions[i], rationale, answer)
                    return None

                clusters = await asyncio.to_thread(self.candidates, vectors)
                found = await asyncio.gather(*(demo_for(c) for c in clusters))
                self.demos = [d for d in found if d is not None]
                self.build_steps = trace.steps
        return self.demos

    async def solve(self, question: str, model: BaseChatModel | str | None = None, *,
                    system: SystemMessage | None = None) -> Solution:
        """Few-shot CoT with the bank's demonstrations (Zhang et al. 2023, "Automatic Chain of
        Thought Prompting in Large Language Models").

        The demonstrations are built on the first solve (one or more Zero-Shot-CoT calls per
        cluster) and reused; ``details["demonstrations"]`` counts them.
        """
        model = as_chat_model(model)
        demos = await self.build(model, system)
        few_shot = ChainOfThought(demos, k=max(1, len(demos)), answer=self.answer,
                                  budget=self.budget)
        solution = await few_shot.solve(question, model, system=system)
        solution.details["demonstrations"] = len(demos)
        return solution


def steps_in(rationale: str) -> int:
    """Reasoning steps of a rationale: its non-empty lines, as Auto-CoT counts them."""
    return sum(1 for line in rationale.splitlines() if line.strip())


def kmeans(vectors: list[list[float]], k: int, *, seed: int = 0, iterations: int = 50
           ) -> tuple[list[list[float]], list[int]]:
    """k-means with k-means++ seeding; deterministic for a seed. Returns centroids and labels."""
    if not 1 <= k <= len(vectors):
        raise ValueError(f"k must be between 1 and the number of vectors ({len(vectors)})")
    rng = random.Random(seed)

    def distance(a, b):
        return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))

    centroids = [vectors[rng.randrange(len(vectors))]]
    while len(centroids) < k:
        weights = [min(distance(v, c) for c in centroids) for v in vectors]
        total = sum(weights)
        if total == 0:
            centroids.append(vectors[rng.randrange(len(vectors))])
            continue
        centroids.append(vectors[rng.choices(range(len(vectors)), weights=weights)[0]])
    labels = [0] * len(vectors)
    for _ in range(iterations):
        new = [min(range(k), key=lambda c: distance(v, centroids[c])) for v in vectors]
        moved = new != labels
        labels = new
        for c in range(k):
            members = [vectors[i] for i, label in enumerate(labels) if label == c]
            if members:
                centroids[c] = [sum(col) / len(members) for col in zip(*members, strict=True)]
        if not moved:
            break
    return centroids, labels


def representatives(vectors: list[list[float]], k: int) -> list[int]:
    """One index per k-means cluster: the member nearest its centroid."""
    centroids, labels = kmeans(vectors, k)
    chosen = []
    for c, centroid in enumerate(centroids):
        members = [i for i, label in enumerate(labels) if label == c]
        if members:
            chosen.append(min(members, key=lambda i: -cosine(vectors[i], centroid)))
    return sorted(chosen)
