"""ponder: asynchronous agent orchestration on LangGraph."""

from ponder.agents import Agent, AgentState, Planner, Profile
from ponder.errors import ConfigurationError, NotFoundError, PonderError
from ponder.memory import InMemoryMemory, Memory
from ponder.memory.knowledge import Document, KnowledgeBase
from ponder.models import Budget, BudgetExceeded, chat_model, embeddings, track_usage

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentState",
    "Budget",
    "BudgetExceeded",
    "ConfigurationError",
    "Document",
    "InMemoryMemory",
    "KnowledgeBase",
    "Memory",
    "NotFoundError",
    "Planner",
    "PonderError",
    "Profile",
    "chat_model",
    "embeddings",
    "track_usage",
]
