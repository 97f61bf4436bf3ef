"""Planning: the Planner protocol; strategies live beside it, one module each."""

from ponder.agents.planning.base import Planner

__all__ = ["Planner"]
