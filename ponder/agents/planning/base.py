"""What planners share: the Planner protocol, the reasoning trace of a solve, budgets, and
solutions."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.constants import TAG_NOSTREAM

from ponder.errors import PonderError
from ponder.models.budgets import Budget, UnpricedModel
from ponder.models.prices import Price, load_price


@runtime_checkable
class Planner(Protocol):
    """Plans a turn before the action module acts.

    ``plan`` returns a state update: ``{"plan": text}`` to guide the tool loop (it is rendered
    into the system message), or ``{"messages": [AIMessage(...)]}`` to answer the turn itself
    (then the tool loop does not run). ``system`` is the agent's profile message: use it in every
    model call so the profile holds in every step. ``action`` is the agent's action module, for
    planners that run steps through its tools.
    """

    async def plan(self, state: dict[str, Any], *, model: BaseChatModel, system: SystemMessage,
                   action: Any, config: RunnableConfig) -> dict[str, Any]:
        """Plan the turn: a state update, ``{"plan": text}`` or ``{"messages": [AIMessage]}``."""


@runtime_checkable
class Solver(Protocol):
    """A planner usable alone, outside any agent: every planner ponder ships is one."""

    async def solve(self, question: str, model: BaseChatModel | str | None = None
                    ) -> Solution:
        """Solve ``question`` with ``model`` (a chat model, a provider string, or None for
        ``PONDER_MODEL``): the answer (None when none was found) and the trace of every step."""


class BudgetExceeded(PonderError, RuntimeError):
    """A solve reached its budget (a ``ponder.Budget`` given to the planner) of calls, tokens
    or dollars: the planner stops and answers with what it has. (A run's or an agent's budget
    raises ``ponder.BudgetExceeded`` instead, which stops the run.)"""


@dataclass(frozen=True)
class Step:
    """One model call of a solve: what it was for, what it said, and what it cost."""

    kind: str
    prompt: str
    output: str
    input_tokens: int
    output_tokens: int
    latency_s: float
    cost_usd: float | None = None  # priced by genai-prices; None for an unpriced model


@dataclass
class Solution:
    """A planner's answer (None when it found none), with the trace of every step."""

    answer: str | None
    steps: list[Step] = field(default_factory=list)
    wall_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def calls(self) -> int:
        """The number of model calls the solve made."""
        return len(self.steps)

    @property
    def input_tokens(self) -> int:
        """Input (prompt) tokens over all steps, as the provider reported them (0 where it did
        not)."""
        return sum(s.input_tokens for s in self.steps)

    @property
    def output_tokens(self) -> int:
        """Output (completion) tokens over all steps, as the provider reported them."""
        return sum(s.output_tokens for s in self.steps)

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens over all steps."""
        return self.input_tokens + self.output_tokens


class ReasoningTrace:
    """A planner's reasoning trace: makes a solve's model calls, records each as a Step (its
    cost priced by genai-prices, for a ponder model), streams it, and enforces the solve's
    ``budget`` (``ponder.Budget``: calls, tokens, usd) between calls. A dollar budget needs a
    priced model: UnpricedModel otherwise, before any call. (A run's trace of spans is
    ``graphs.tracing.RunTracer``.)"""

    def __init__(self, model: BaseChatModel, system: SystemMessage | None = None,
                 budget: Budget | None = None) -> None:
        self.model = model
        self.system = system
        self.budget = budget
        self.steps: list[Step] = []
        self.in_flight = 0  # concurrent calls count against the budget before they finish
        self.started = time.perf_counter()
        self._price: Price | None = None
        self._priced = False  # whether the model's price was looked up

    @property
    def spent_tokens(self) -> int:
        """Input plus output tokens of the finished calls so far."""
        return sum(s.input_tokens + s.output_tokens for s in self.steps)

    @property
    def spent_dollars(self) -> float:
        """USD spent by the finished calls so far (0 for calls of an unpriced model)."""
        return sum(s.cost_usd or 0.0 for s in self.steps)

    def check_budget(self, calls: int = 1) -> None:
        """Raise BudgetExceeded unless ``calls`` more calls fit the budget."""
        b = self.budget
        if b is None:
            return
        if b.calls is not None and len(self.steps) + self.in_flight + calls > b.calls:
            raise BudgetExceeded(f"the budget of {b.calls} calls is spent")
        if b.tokens is not None and self.spent_tokens >= b.tokens:
            raise BudgetExceeded(f"the budget of {b.tokens} tokens is spent")
        if b.usd is not None and self.spent_dollars >= b.usd:
            raise BudgetExceeded(f"the budget of ${b.usd:g} is spent "
                                 f"(${self.spent_dollars:.6f})")

    async def load_price(self) -> None:
        """The model's price, once (ponder's models name their provider and model)."""
        if self._priced:
            return
        provider = getattr(self.model, "provider", None)
        name = getattr(self.model, "model_name", None)
        if isinstance(provider, str) and isinstance(name, str):
            self._price = await load_price(provider, name)
        self._priced = True
        if self._price is None and self.budget is not None and self.budget.usd is not None:
            raise UnpricedModel(
                f"a dollar budget needs the model's price, and genai-prices has none for "
                f"{provider or type(self.model).__name__}:{name or '?'}: give the solve a "
                "budget of tokens or calls instead")

    def messages(self, prompt: str | Sequence[BaseMessage]) -> list[BaseMessage]:
        """The messages of one call: the profile's system message (if any), then ``prompt``.

        A string prompt becomes one HumanMessage; a sequence of messages is used as given.
        """
        body = [HumanMessage(prompt)] if isinstance(prompt, str) else list(prompt)
        return [self.system, *body] if self.system is not None else body

    async def ask(self, kind: str, prompt: str | Sequence[BaseMessage], **kwargs: Any
                  ) -> AIMessage:
        """One model call: the profile first, then ``prompt``. ``kwargs`` go to the provider."""
        await self.load_price()
        self.check_budget()
        messages = self.messages(prompt)
        started = time.perf_counter()
        self.in_flight += 1
        try:
            # A planner's inner calls stay out of the "messages" stream (its steps show in the
            # "custom" stream; its answer, as the node's message).
            reply = await self.model.ainvoke(messages, {"tags": [TAG_NOSTREAM]}, **kwargs)
        finally:
            self.in_flight -= 1
        self.record(kind, messages, reply, time.perf_counter() - started)
        return reply

    def record(self, kind: str, messages: list[BaseMessage], reply: AIMessage, latency: float
               ) -> Step:
        """Record a finished call as a Step (tokens from the reply's usage, ``latency`` in seconds).

        The step's prompt is the last message's text. It is also written to the run's ``custom``
        stream when inside a LangGraph run. Returns the step.
        """
        usage = reply.usage_metadata or {}
        tokens_in, tokens_out = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
        step = Step(kind, str(messages[-1].content), reply.text, tokens_in, tokens_out, latency,
                    self._price.cost_usd(tokens_in, tokens_out) if self._price else None)
        self.steps.append(step)
        _emit(step)
        return step

    def solution(self, answer: str | None, **details: Any) -> Solution:
        """The Solution with ``answer``, every step so far and the wall time since the trace began.

        ``details`` go to ``Solution.details``, except ``error``, which becomes ``Solution.error``.
        """
        error = details.pop("error", None)
        return Solution(answer, list(self.steps), time.perf_counter() - self.started, details,
                        error)


def _emit(step: Step) -> None:
    """Inside a LangGraph run, each step shows in the ``custom`` stream; elsewhere, nowhere."""
    try:
        from langgraph.config import get_stream_writer

        write = get_stream_writer()
    except RuntimeError:
        return
    write({"planner_step": step.kind, "output": step.output[:500],
           "tokens": step.input_tokens + step.output_tokens, "latency_s": round(step.latency_s, 4)})


def question_of(state: dict[str, Any]) -> str:
    """The text of the turn's last human message."""
    for message in reversed(state.get("messages", [])):
        if isinstance(message, HumanMessage):
            return message.text
    return ""


class AnsweringPlanner(ABC):
    """A planner that answers the turn itself (CoT, Self-Consistency, Tree of Thoughts)."""

    @abstractmethod
    async def solve(self, question: str, model: BaseChatModel | str | None = None, *,
                    system: SystemMessage | None = None) -> Solution:
        """Solve ``question`` alone, outside any agent."""

    async def plan(self, state: dict[str, Any], *, model: BaseChatModel, system: SystemMessage,
                   action: Any, config: RunnableConfig) -> dict[str, Any]:
        """Answer the turn with ``solve``: one AIMessage, or a sentence naming the error when none.

        Its ``response_metadata`` carries the planner's class name, its calls and total tokens.
        """
        solution = await self.solve(question_of(state), model, system=system)
        text = solution.answer if solution.answer is not None else (
            f"I could not find an answer: {solution.error or 'no step produced one'}.")
        return {"messages": [AIMessage(content=text, response_metadata={
            "planner": type(self).__name__, "calls": solution.calls,
            "total_tokens": solution.total_tokens})]}


