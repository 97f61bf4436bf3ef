"""Self-Consistency (Wang et al.): sample several reasoning paths, vote on their answers.

The k paths run concurrently (or come from one request with ``n=k`` where the provider supports
it). Answers are normalised before the vote, so "18", "18.00" and "$18" agree. With
``weighted=True`` a path's vote is its probability (from token logprobs, when the provider
returns them). The vote stops early once the samples still out cannot change the winner.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, SystemMessage

from ponder.agents.planning.base import (
    AnsweringPlanner,
    Budget,
    BudgetExceeded,
    ReasoningTrace,
    Solution,
)
from ponder.agents.planning.cot import ChainOfThought, ZeroShotCoT
from ponder.models import as_chat_model
from ponder.models.budgets import BudgetExceeded as RunBudgetExceeded
from ponder.models.budgets import UnpricedModel


class SelfConsistency(AnsweringPlanner):
    """Majority vote over ``k`` sampled paths of a CoT prompt (default: Zero-Shot-CoT).

    ``base`` is the planner whose ``reason`` samples one path (a ``ChainOfThought`` in any prompt
    format, or a ``ZeroShotCoT``); its answer kind decides which answers are equal.
    """

    def __init__(self, k: int = 10, *, base: ChainOfThought | ZeroShotCoT | None = None,
                 temperature: float = 0.7, use_n: bool = False, weighted: bool = False,
                 early_stop: bool = True, budget: Budget | None = None) -> None:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a whole number of at least 1, got {k!r}")
        self.k = k
        self.base = base or ZeroShotCoT()
        self.temperature = temperature
        self.use_n = use_n
        self.weighted = weighted
        self.early_stop = early_stop
        self.budget = budget

    def _sampling(self) -> dict[str, Any]:
        options: dict[str, Any] = {"temperature": self.temperature}
        if self.weighted:
            options["logprobs"] = True
        return options

    async def solve(self, question: str, model: BaseChatModel | str | None = None, *,
                    system: SystemMessage | None = None) -> Solution:
        """Sample ``k`` reasoning paths and return the answer most of them reach.

        Self-Consistency (Wang et al. 2023, "Self-Consistency Improves Chain of Thought Reasoning in
        Language Models"). ``details`` holds ``votes`` (answer to count or weight), ``agreement``
        (the winner's share, 0 to 1), ``sampled``, ``k`` and ``failed_paths``; a failed path is a
        lost vote. Ties go to the earliest answer. A spent budget with ``use_n`` gives no answer and
        an error.
        """
        trace = ReasoningTrace(as_chat_model(model), system, self.budget)
        failures: list[str] = []
        if self.use_n and isinstance(self.base, ChainOfThought):
            try:
                paths = await self._one_request(trace, question)
            except BudgetExceeded as exc:
                return trace.solution(None, votes={}, agreement=0.0, error=f"stopped: {exc}")
        else:
            paths = await self._concurrent(trace, question, failures)
        return self._vote(trace, paths, failures)

    async def _concurrent(self, trace: ReasoningTrace, question: str, failures: list[str]
                          ) -> list[tuple[str | None, float]]:
        """Launch all k paths; stop the rest once they cannot change the winner."""
        tasks = [asyncio.ensure_future(self._path(trace, question)) for _ in range(self.k)]
        paths: list[tuple[str | None, float]] = []
        try:
            for finished in asyncio.as_completed(tasks):
                try:
                    paths.append(await finished)
                except (RunBudgetExceeded, UnpricedModel):
                    raise  # a run's budget stops the run, not one path
                except Exception as exc:  # one failed path is a lost vote, not a failed solve
                    paths.append((None, 0.0))
                    failures.append(f"{type(exc).__name__}: {exc}")
                if self.early_stop and self._decided(paths):
                    break
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return paths

    async def _path(self, trace: ReasoningTrace, question: str) -> tuple[str | None, float]:
        reasoning, answer = await self.base.reason(trace, question, **self._sampling())
        return answer, path_probability(reasoning) if self.weighted else 1.0

    async def _one_request(self, trace: ReasoningTrace, question: str
                           ) -> list[tuple[str | None, float]]:
        """All k paths from one request with ``n=k`` (few-shot CoT only: one call per path)."""
        await trace.load_price()
        trace.check_budget(self.k)
        examples = await self.base.choose(question)
        messages = trace.messages(self.base.prompt(question, examples))
        started = time.perf_counter()
        result = await trace.model.agenerate([messages], n=self.k, **self._sampling())
        latency = time.perf_counter() - started
        paths = []
        for i, generation in enumerate(result.generations[0]):
            message = generation.message
            # Providers report one request's usage on every choice: count it once.
            recorded = message if i == 0 else message.model_copy(update={"usage_metadata": None})
            trace.record("cot", messages, recorded, latency if i == 0 else 0.0)
            answer = self.base.extract(message.text)
            paths.append((answer, path_probability(message) if self.weighted else 1.0))
        return paths

    def _decided(self, paths: list[tuple[str | None, float]]) -> bool:
        if self.weighted:
            return False  # weights are unknown until every path is in
        counts = Counter(a for a, _ in paths if a is not None).most_common(2)
        if not counts:
            return False
        lead = counts[0][1] - (counts[1][1] if len(counts) > 1 else 0)
        return lead > self.k - len(paths)

    def _vote(self, trace: ReasoningTrace, paths: list[tuple[str | None, float]],
              failures: list[str] = ()) -> Solution:
        votes: dict[str, float] = {}
        for answer, weight in paths:  # first come, first placed: ties go to the earliest
            if answer is not None:
                votes[answer] = votes.get(answer, 0.0) + weight
        details: dict[str, Any] = {"sampled": len(paths), "k": self.k,
                                   "failed_paths": list(failures)}
        if not votes:
            return trace.solution(None, votes={}, agreement=0.0, **details,
                                  error="no path produced an answer")
        winner = max(votes, key=votes.get)  # max keeps the first of equal counts
        agreement = votes[winner] / sum(votes.values())
        return trace.solution(winner, votes=votes, agreement=round(agreement, 4), **details)


def path_probability(message: AIMessage) -> float:
    """The geometric-mean token probability of a reply, from its logprobs (1.0 without)."""
    content = (message.response_metadata.get("logprobs") or {}).get("content") or []
    logprobs = [t["logprob"] for t in content if "logprob" in t]
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else 1.0
