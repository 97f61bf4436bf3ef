"""The LangGraph Agent Server API (assistants, threads, runs, state), so that the official
``langgraph-sdk`` client, and what is built on it, work against ``ponder serve``."""

from ponder.server.agent_server.routes import router
from ponder.server.agent_server.runner import AgentServer
from ponder.server.agent_server.threads import AgentThreads

__all__ = ["AgentServer", "AgentThreads", "router"]
