"""Tools the action module acts through."""

from ponder.tools.builtin import BUILTIN_TOOLS, calculator, current_time

__all__ = ["BUILTIN_TOOLS", "calculator", "current_time"]
