"""Tools the action module acts through."""

from ponder.tools.builtin import BUILTIN_TOOLS, calculator, current_time
from ponder.tools.search import WebSearch, web_search_tool
from ponder.tools.toolkit import tool

__all__ = ["BUILTIN_TOOLS", "WebSearch", "calculator", "current_time", "tool", "web_search_tool"]
