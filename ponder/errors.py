"""The errors ponder raises on purpose, under one root.

Every error here says what was wrong and what to do. An application tells them from bugs by
catching ``PonderError`` (``ponder``'s CLI does, in one place, and prints the message alone).
Modules define their own subclasses (``ModelCallError``, ``UnsafeSQLError``, ``FilterError``,
...) beside the code that raises them; the two that every layer uses live here.
"""

from __future__ import annotations


class PonderError(Exception):
    """The root of every error ponder raises on purpose; its message is for the user."""


class ConfigurationError(PonderError, ValueError):
    """A setting, argument, file or value that cannot work as given (``ValueError`` too)."""


class NotFoundError(PonderError, KeyError):
    """A command on something that does not exist: a run, schedule, memory, API key or thread.

    The message names it and says how to list what does exist. Also a ``KeyError``, for code
    that catches that; reading functions (``get``) return None instead of raising it.
    """

    def __str__(self) -> str:
        # KeyError's own str() quotes the message like a key.
        return str(self.args[0]) if self.args else ""
