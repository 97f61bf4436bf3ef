"""The database layer, below everything but ``config`` and ``errors``: URLs, ponder's one
SQLite library, LangGraph's checkpointer and store, and ponder's own tables."""

from ponder.db.url import DatabaseURL, parse_url

__all__ = ["DatabaseURL", "parse_url"]
