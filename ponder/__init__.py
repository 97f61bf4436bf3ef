"""ponder: asynchronous agent orchestration on LangGraph."""

from ponder.agents import Agent, AgentState, Planner, Profile
from ponder.memory import InMemoryMemory, Memory
from ponder.memory.knowledge import Document, KnowledgeBase
from ponder.models import chat_model, embeddings, track_usage

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentState",
    "Document",
    "InMemoryMemory",
    "KnowledgeBase",
    "Memory",
    "Planner",
    "Profile",
    "chat_model",
    "embeddings",
    "track_usage",
]
