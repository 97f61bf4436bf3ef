"""The chatbot backend: the OpenAI-compatible API and the LangGraph Agent Server API over
agents and graphs (FastAPI)."""

from ponder.server.app import create_app

__all__ = ["create_app"]
