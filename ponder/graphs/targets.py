"""TARGET strings -> runnable things: ``module:attr``, ``path/to/file.py:attr`` or a spec file."""

from __future__ import annotations

import inspect
from pathlib import Path

from langgraph.pregel import Pregel

from ponder.agents.agent import Agent
from ponder.config import ConfigurationError, missing_extra
from ponder.loading import load_object


def load_target(ref: str, *, model: str | None = None) -> Agent | Pregel:
    """The agent or compiled LangGraph graph ``ref`` names (or a function returning one, called
    without arguments); ``model`` overrides an agent's."""
    if ref.endswith((".yaml", ".yml")):
        return Agent.from_spec(ref, model=model)
    try:
        target = load_object(ref)
    except ConfigurationError:
        if Path(ref).is_file():
            raise ConfigurationError(
                f"{ref!r} is a file: add the name of the agent in it (e.g. {ref}:agent), "
                "or pass a .yaml spec") from None
        raise
    except Exception as exc:  # the user's module failed to import: say where, briefly
        why = isinstance(exc, ModuleNotFoundError) and missing_extra(exc)
        raise ConfigurationError(
            f"cannot load {ref!r}: {why or f'{type(exc).__name__}: {exc}'}") from None
    if inspect.isfunction(target):  # a factory: def build() -> Agent
        required = [p for p in inspect.signature(target).parameters.values()
                    if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if required:
            raise ConfigurationError(
                f"{ref!r} is a function that takes arguments: name an Agent, a compiled "
                "LangGraph graph, or a function without arguments that returns one")
        target = target()
    if isinstance(target, Agent):
        return target.with_model(model) if model else target
    if isinstance(target, Pregel):
        if model:
            raise ConfigurationError(f"--model applies to agents, and {ref!r} is a LangGraph "
                                     "graph: set the model where the graph is built")
        return target
    raise ConfigurationError(f"{ref!r} is a {type(target).__name__}, not an Agent or a compiled "
                             "LangGraph graph")
