"""Planning: how an agent thinks before (or instead of) acting.

Each strategy is an object usable alone (``await planner.solve(question, model)``, returning a
``Solution`` with the answer and a trace of every step and its tokens) and as an agent's
``planner=``, where its steps show in the ``custom`` stream and its tokens in ``messages``.
``make_planner("sc", k=5)`` makes one by its name or alias, the names agent specs, the CLI and
evaluation share (``planner_name`` resolves one, listing the known names for an unknown one).
"""

from ponder.agents.planning.answers import canonical_answer, extract_answer
from ponder.agents.planning.base import Budget, BudgetExceeded, Planner, Solution, Step
from ponder.agents.planning.cot import AutoCoT, ChainOfThought, Example, PromptFormat, ZeroShotCoT
from ponder.agents.planning.decompose import Decompose
from ponder.agents.planning.game24 import Game24
from ponder.agents.planning.registry import make_planner, planner_name
from ponder.agents.planning.self_consistency import SelfConsistency
from ponder.agents.planning.tot import TreeOfThoughts

__all__ = [
    "AutoCoT",
    "Budget",
    "BudgetExceeded",
    "ChainOfThought",
    "Decompose",
    "Example",
    "Game24",
    "Planner",
    "PromptFormat",
    "SelfConsistency",
    "Solution",
    "Step",
    "TreeOfThoughts",
    "ZeroShotCoT",
    "canonical_answer",
    "extract_answer",
    "make_planner",
    "planner_name",
]
