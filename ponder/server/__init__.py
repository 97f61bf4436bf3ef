"""The chatbot backend: an OpenAI-compatible API over agents (FastAPI)."""

from ponder.server.app import create_app

__all__ = ["create_app"]
