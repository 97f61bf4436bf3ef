"""Memory: what an agent recalls before a turn and learns after it."""

from ponder.memory.base import Memory
from ponder.memory.notes import InMemoryMemory

__all__ = ["InMemoryMemory", "Memory"]
