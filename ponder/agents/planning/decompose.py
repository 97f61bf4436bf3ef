"""Task decomposition (plan-and-execute): write subtasks, run each through the tools, revise the
plan when a step fails, then synthesise the answer from the steps' results.

Subtasks run in order, because a later one may need an earlier one's result. Each runs as a small
tool loop through the agent's action module (its tools, timeouts and error handling). A subtask
fails when the model says ``FAILED: why`` or its tool loop runs out of steps; then the planner
rewrites the remaining plan, knowing what failed, up to ``max_revisions`` times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool

from ponder.agents.action import ActionModule
from ponder.agents.planning.base import Budget, ReasoningTrace, Solution, question_of
from ponder.models import as_chat_model, list_items

PLAN_PROMPT = """Break this task into at most {n} subtasks that, done in order, solve it. Each \
subtask should be one action: look something up, call a tool, compute, or write. Reply with \
the subtasks only, one per line, numbered "1.", "2.", ...

Task: {question}"""

STEP_PROMPT = """Overall task: {question}

Results so far:
{results}

Now do this subtask, using your tools when they help: {subtask}
Reply with the subtask's result. If you cannot do it, reply "FAILED: " and the reason."""

REVISE_PROMPT = """Overall task: {question}

Done so far:
{results}

This subtask failed: {subtask}
Reason: {reason}

Write a new plan for the rest of the task that avoids the failure: at most {n} subtasks, one \
per line, numbered "1.", "2.", ..."""

SYNTHESIS_PROMPT = """Task: {question}

Results of the steps taken:
{results}

Using these results, write the final answer to the task."""

class Decompose:
    """Plan-and-execute. Alone: ``await Decompose(tools=[...]).solve(question, model)``."""

    def __init__(self, *, tools: Sequence[BaseTool | Callable[..., Any]] = (),
                 max_subtasks: int = 6, max_revisions: int = 2, max_tool_steps: int = 5,
                 budget: Budget | None = None) -> None:
        if max_subtasks < 1:
            raise ValueError(f"max_subtasks must be at least 1, got {max_subtasks}")
        if max_revisions < 0:
            raise ValueError(f"max_revisions must not be negative, got {max_revisions}")
        self.action = ActionModule(tools, max_steps=max_tool_steps) if tools else None
        self.max_subtasks, self.max_revisions = max_subtasks, max_revisions
        self.max_tool_steps = max_tool_steps
        self.budget = budget

    async def solve(self, question: str, model: BaseChatModel | str | None = None, *,
                    system: SystemMessage | None = None, action: ActionModule | None = None
                    ) -> Solution:
        """Plan, run each subtask through ``action``'s tools, revise on failure, then synthesise.

        Decomposition after Plan-and-Solve (Wang et al. 2023, "Plan-and-Solve Prompting").
        ``action`` defaults to the planner's own tools, else a tool-less action module.
        ``details["plan"]`` lists the executed subtasks as ``{"subtask", "ok", "result"}`` dicts and
        ``details["revisions"]`` counts the rewrites. A plan with no subtasks gives no answer and an
        error.
        """
        action = action or self.action or ActionModule(max_steps=self.max_tool_steps)
        trace = ReasoningTrace(as_chat_model(model), system, self.budget)
        reply = await trace.ask("plan", PLAN_PROMPT.format(n=self.max_subtasks, question=question))
        plan = list_items(reply.text, self.max_subtasks)
        if not plan:
            return trace.solution(None, plan=[], error="the planner wrote no subtasks")
        done: list[tuple[str, str]] = []
        revisions = 0
        executed: list[dict[str, Any]] = []
        while plan:
            subtask = plan.pop(0)
            ok, result = await self.run_subtask(trace, action, question, subtask, done)
            executed.append({"subtask": subtask, "ok": ok, "result": result})
            if ok:
                done.append((subtask, result))
                continue
            if revisions >= self.max_revisions:
                done.append((subtask, f"(failed: {result})"))
                continue
            revisions += 1
            reply = await trace.ask("revise", REVISE_PROMPT.format(
                question=question, results=results_text(done), subtask=subtask, reason=result,
                n=self.max_subtasks))
            plan = list_items(reply.text, self.max_subtasks)
        final = await trace.ask("synthesize", SYNTHESIS_PROMPT.format(
            question=question, results=results_text(done)))
        return trace.solution(final.text, plan=executed, revisions=revisions)

    async def run_subtask(self, trace: ReasoningTrace, action: ActionModule, question: str,
                          subtask: str, done: list[tuple[str, str]]) -> tuple[bool, str]:
        """A small tool loop for one subtask: (succeeded, result or reason)."""
        tool_kwargs = trace.model.bind_tools(action.tools).kwargs if action.tools else {}
        messages: list[BaseMessage] = [HumanMessage(STEP_PROMPT.format(
            question=question, results=results_text(done), subtask=subtask))]
        for _ in range(action.max_steps + 1):
            reply: AIMessage = await trace.ask("step", messages, **tool_kwargs)
            messages.append(reply)
            if not (reply.tool_calls or reply.invalid_tool_calls):
                text = reply.text.strip()
                if text.upper().startswith("FAILED"):
                    return False, text.partition(":")[2].strip() or "no reason given"
                return True, text
            messages += await action.run(reply)
        return False, f"no result after {action.max_steps} tool steps"

    async def plan(self, state: dict[str, Any], *, model: BaseChatModel, system: SystemMessage,
                   action: ActionModule, config: RunnableConfig) -> dict[str, Any]:
        """Solve the turn with the agent's action module: the executed plan as ``plan`` (numbered
        lines) and the synthesised answer (or the error) as the turn's message."""
        solution = await self.solve(question_of(state), model, system=system,
                                    action=action if action.tools else None)
        steps = "\n".join(f"{i}. {s['subtask']}" for i, s in enumerate(
            solution.details.get("plan", []), 1))
        return {"plan": steps, "messages": [AIMessage(content=solution.answer or (
            f"I could not complete the task: {solution.error}."))]}


def results_text(done: list[tuple[str, str]]) -> str:
    """The done subtasks as "- subtask: result" lines, or "(none yet)"."""
    return "\n".join(f"- {subtask}: {result}" for subtask, result in done) or "(none yet)"
