"""Tree of Thoughts (Yao et al.), with its four design decisions as parameters.

1. decomposition: the task's ``steps`` (Game of 24: three combining steps, then the answer);
2. generation: ``"propose"`` several next steps in one call, or ``"sample"`` ``n_generate``
   i.i.d. steps;
3. evaluation: ``"value"`` each state (sure/likely/impossible mapped to scores, summed over
   ``n_evaluate`` samples) or ``"vote"`` across the states of a level in one prompt;
4. search: ``"bfs"`` keeping the ``breadth`` best states per level, ``"beam"`` keeping the best
   by the whole path's score, or ``"dfs"`` with a pruning ``threshold`` and backtracking.

All generations of a level run concurrently, then all its evaluations; a value cache keyed by the
task's ``state_key`` never scores an equivalent state twice (even while one is in flight); a
``Budget`` of calls, tokens or dollars stops the search with what it has.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import SystemMessage

from ponder.agents.planning.base import (
    AnsweringPlanner,
    Budget,
    BudgetExceeded,
    ReasoningTrace,
    Solution,
)
from ponder.agents.planning.game24 import Game24
from ponder.models import as_chat_model
from ponder.tasks import gather_cancelling


class ThoughtTask(Protocol):
    """What a task tells Tree of Thoughts (see ``game24.Game24`` for the shipped one)."""

    steps: int

    def parse_input(self, question: str) -> Any:
        """The problem ``x`` from the question text; raises ValueError when it is not one."""

    def propose_prompt(self, x: Any, y: str) -> str:
        """The prompt that proposes next steps from the state ``y`` (the steps so far)."""

    def sample_prompt(self, x: Any, y: str) -> str:
        """The prompt for one sampled next step from the state ``y``."""

    def children(self, x: Any, y: str, text: str) -> list[str]:
        """The valid child states that a generation reply ``text`` makes from the state ``y``."""

    def value_prompt(self, x: Any, y: str) -> str:
        """The prompt that rates the state ``y``."""

    def parse_value(self, text: str) -> float:
        """The score of one value reply (higher is more promising)."""

    def vote_prompt(self, x: Any, states: list[str]) -> str:
        """The prompt that picks the most promising of ``states``."""

    def parse_vote(self, text: str, count: int) -> int | None:
        """The 0-based index of the state a vote reply picks, or None."""

    def is_final(self, y: str) -> bool:
        """Whether the state ``y`` is an answer."""

    def final_value(self, x: Any, y: str) -> float:
        """The exact value of a final state (no model call)."""

    def state_key(self, x: Any, y: str) -> str:
        """A key shared by states worth the same, for the value cache."""

    def check(self, x: Any, y: str) -> bool:
        """Whether the state ``y`` answers ``x`` correctly."""

    def answer(self, y: str) -> str | None:
        """The answer text of a final state, or None."""


class TreeOfThoughts(AnsweringPlanner):
    """Tree of Thoughts: search over partial solutions, the model generating and rating each step.

    Yao et al. 2023, "Tree of Thoughts: Deliberate Problem Solving with Large Language Models".
    ``task`` is a ThoughtTask (default: the Game of 24). ``generate`` is "propose" or "sample"
    (``n_generate`` samples at ``temperature``); ``evaluate`` is "value" (``n_evaluate`` samples
    summed) or "vote"; ``search`` is "bfs" or "beam" (keep the ``breadth`` best states per level) or
    "dfs" (prune children scoring below ``threshold``, at most ``max_visits`` states expanded).
    ``budget`` caps calls, tokens or USD. Raises ValueError for an unknown option or a count below
    1.
    """
    def __init__(self, task: ThoughtTask | None = None, *, generate: str = "propose",
                 evaluate: str = "value", search: str = "bfs", breadth: int = 5,
                 n_generate: int = 1, n_evaluate: int = 3, threshold: float = 1.0,
                 max_visits: int = 100, temperature: float = 0.7,
                 budget: Budget | None = None) -> None:
        for name, value, allowed in (("generate", generate, ("propose", "sample")),
                                     ("evaluate", evaluate, ("value", "vote")),
                                     ("search", search, ("bfs", "beam", "dfs"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        for name, value in (("breadth", breadth), ("n_generate", n_generate),
                            ("n_evaluate", n_evaluate), ("max_visits", max_visits)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        self.task = task or Game24()
        self.generate, self.evaluate, self.search = generate, evaluate, search
        self.breadth, self.n_generate, self.n_evaluate = breadth, n_generate, n_evaluate
        self.threshold, self.max_visits = threshold, max_visits
        self.temperature = temperature
        self.budget = budget

    async def solve(self, question: str, model: BaseChatModel | str | None = None, *,
                    system: SystemMessage | None = None) -> Solution:
        """Search for a checked answer to ``question``.

        Raises ValueError when the task cannot parse the question (Game of 24: four numbers). A
        spent budget stops the search with the best correct final state found so far, else no answer
        and the error "stopped: ...". ``details`` counts visited, cache_hits, pruned, backtracks,
        rejected_steps and sequential_calls (model-call phases in a row).
        """
        x = self.task.parse_input(question)
        run = _Search(self, x, ReasoningTrace(as_chat_model(model), system, self.budget))
        error = None
        try:
            found = await (run.dfs("", 0) if self.search == "dfs" else run.levels())
        except BudgetExceeded as exc:
            found, error = run.best_final(), f"stopped: {exc}"
        answer = self.task.answer(found) if found and self.task.check(x, found) else None
        if answer is None and error is None:
            error = "no state reached a correct answer"
        return run.trace.solution(answer, error=error, **run.stats())


class _Search:
    """The state of one search: its trace, value cache and counters."""

    def __init__(self, tot: TreeOfThoughts, x: Any, trace: ReasoningTrace) -> None:
        self.tot, self.task, self.x, self.trace = tot, tot.task, x, trace
        self.cache: dict[str, asyncio.Future] = {}
        self.cache_hits = self.visited = self.pruned = self.backtracks = self.rejected = 0
        self.sequential_calls = 0  # model-call phases in a row: the critical path, in calls
        self.finals: list[tuple[str, float]] = []

    def stats(self) -> dict[str, Any]:
        return {"visited": self.visited, "cache_hits": self.cache_hits, "pruned": self.pruned,
                "backtracks": self.backtracks, "rejected_steps": self.rejected,
                "sequential_calls": self.sequential_calls}

    async def _phase(self, work: list) -> list:
        """Run one phase of independent calls together; it costs one call's time."""
        calls_before = len(self.trace.steps)
        results = await gather_cancelling(*work)
        if len(self.trace.steps) > calls_before:
            self.sequential_calls += 1
        return results

    # -- generation ----------------------------------------------------------------------------

    async def expand(self, y: str) -> list[str]:
        if self.tot.generate == "propose":
            reply = await self.trace.ask("propose", self.task.propose_prompt(self.x, y))
            texts = [reply.text]
        else:
            replies = await gather_cancelling(*(
                self.trace.ask("sample", self.task.sample_prompt(self.x, y),
                               temperature=self.tot.temperature)
                for _ in range(self.tot.n_generate)))
            texts = [r.text for r in replies]
        children = list(dict.fromkeys(c for t in texts for c in self.task.children(self.x, y, t)))
        if not children:
            self.rejected += 1
        return children

    # -- evaluation ----------------------------------------------------------------------------

    async def value(self, y: str) -> float:
        if self.task.is_final(y):
            return self.task.final_value(self.x, y)  # exact, no model needed
        key = self.task.state_key(self.x, y)
        if key in self.cache:
            self.cache_hits += 1
            return await asyncio.shield(self.cache[key])
        future = self.cache[key] = asyncio.get_running_loop().create_future()
        try:
            prompt = self.task.value_prompt(self.x, y)
            replies = await gather_cancelling(*(
                self.trace.ask("value", prompt, temperature=self.tot.temperature)
                for _ in range(self.tot.n_evaluate)))
            score = sum(self.task.parse_value(r.text) for r in replies)
        except BaseException as exc:
            del self.cache[key]
            future.set_exception(exc)
            future.exception()  # retrieved: waiting twins see it, nobody warns about it
            raise
        future.set_result(score)
        return score

    async def vote(self, states: list[str]) -> list[float]:
        prompt = self.task.vote_prompt(self.x, states)
        replies = await gather_cancelling(*(
            self.trace.ask("vote", prompt, temperature=self.tot.temperature)
            for _ in range(self.tot.n_evaluate)))
        scores = [0.0] * len(states)
        for reply in replies:
            choice = self.task.parse_vote(reply.text, len(states))
            if choice is not None:
                scores[choice] += 1
        return scores

    async def score(self, states: list[str]) -> list[float]:
        if self.tot.evaluate == "vote" and len(states) > 1:
            return (await self._phase([self.vote(states)]))[0]
        return list(await self._phase([self.value(s) for s in states]))

    # -- search --------------------------------------------------------------------------------

    async def levels(self) -> str | None:
        """BFS (rank by the state's score) or beam (rank by the path's summed score)."""
        frontier: list[tuple[str, float]] = [("", 0.0)]
        for _ in range(self.task.steps):
            expanded = await self._phase([self.expand(y) for y, _ in frontier])
            parents = {c: path for (_, path), kids in zip(frontier, expanded, strict=True)
                       for c in kids}
            states = list(parents)
            self.visited += len(states)
            if not states:
                break
            scores = await self.score(states)
            totals = [s + parents[y] if self.tot.search == "beam" else s
                      for y, s in zip(states, scores, strict=True)]
            ranked = sorted(zip(states, totals, strict=True), key=lambda p: -p[1])
            self.pruned += max(0, len(ranked) - self.tot.breadth)
            frontier = ranked[: self.tot.breadth]
            self.finals += [(y, s) for y, s in frontier if self.task.is_final(y)]
        return self.best_final()

    def best_final(self) -> str | None:
        correct = [y for y, _ in sorted(self.finals, key=lambda p: -p[1])
                   if self.task.check(self.x, y)]
        return correct[0] if correct else None

    async def dfs(self, y: str, depth: int) -> str | None:
        """Depth first: best child first, prune below ``threshold``, backtrack on dead ends."""
        if self.task.is_final(y):
            self.finals.append((y, self.task.final_value(self.x, y)))
            return y if self.task.check(self.x, y) else None
        if depth >= self.task.steps or self.visited >= self.tot.max_visits:
            return None
        self.visited += 1
        children = (await self._phase([self.expand(y)]))[0]
        scores = await self.score(children)
        for child, score in sorted(zip(children, scores, strict=True), key=lambda p: -p[1]):
            if score < self.tot.threshold:
                self.pruned += 1
                continue
            found = await self.dfs(child, depth + 1)
            if found:
                return found
            self.backtracks += 1
        return None
