"""Memory: what an agent recalls before a turn and learns after it."""

from ponder.memory.base import Memories, Memory
from ponder.memory.conversation import ConversationMemory
from ponder.memory.notes import InMemoryMemory

__all__ = ["ConversationMemory", "InMemoryMemory", "Memories", "Memory"]
