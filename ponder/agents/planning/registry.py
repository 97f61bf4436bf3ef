"""The names of the planners: one registry, read by agent specs (``planner: sc``), the CLI
(``ponder eval gsm8k --method sc``) and evaluation, so a name means the same planner everywhere.

Each planner has one name, the method's own ("self-consistency"), and may have short aliases
("sc"); the paper that defines each method is in its class's docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ponder.agents.planning.base import Planner
from ponder.agents.planning.cot import (
    ANSWERS_ONLY,
    ChainOfThought,
    Example,
    PromptFormat,
    ZeroShotCoT,
)
from ponder.agents.planning.decompose import Decompose
from ponder.agents.planning.self_consistency import SelfConsistency
from ponder.agents.planning.tot import TreeOfThoughts
from ponder.config import ConfigurationError


def _examples(examples: Sequence[Example | Mapping[str, str]]) -> list[Example]:
    """Worked examples as given, or from mappings (a spec's YAML) with question, rationale and
    answer."""
    if not examples:
        raise ConfigurationError("it needs examples=: worked examples with question, rationale "
                                 "and answer")
    try:
        return [e if isinstance(e, Example) else Example(**e) for e in examples]
    except TypeError as exc:
        raise ConfigurationError(f"an example needs question, rationale and answer: {exc}"
                                 ) from None


def _format(value: PromptFormat | Mapping[str, str] | None) -> PromptFormat | None:
    """A prompt format as given, or from a mapping of its fields (a spec's YAML)."""
    return PromptFormat(**value) if isinstance(value, Mapping) else value


def _chain_of_thought(examples: Sequence[Example | Mapping[str, str]] = (), *,
                      prompt_format: PromptFormat | Mapping[str, str] | None = None,
                      **options: Any) -> ChainOfThought:
    return ChainOfThought(_examples(examples), prompt_format=_format(prompt_format), **options)


def _input_output(examples: Sequence[Example | Mapping[str, str]] = (), *,
                  prompt_format: PromptFormat | Mapping[str, str] | None = None,
                  **options: Any) -> ChainOfThought:
    # Standard prompting is few-shot prompting whose examples show no reasoning.
    return ChainOfThought([Example(e.question, "", e.answer) for e in _examples(examples)],
                          prompt_format=_format(prompt_format) or ANSWERS_ONLY, **options)


def _self_consistency(k: int = 10, *, base: Any = None, **options: Any) -> SelfConsistency:
    # The base may be named too ({type: sc, base: {type: cot, examples: [...]}} in a spec).
    if isinstance(base, str | Mapping):
        base = make_planner(base)
    return SelfConsistency(k, base=base, **options)


@dataclass(frozen=True)
class PlannerName:
    """A planner's name, its aliases, and the factory that makes one from keyword options."""

    name: str
    factory: Callable[..., Planner]
    aliases: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.name} ({', '.join(self.aliases)})" if self.aliases else self.name


PLANNERS: tuple[PlannerName, ...] = (
    PlannerName("zero-shot-cot", ZeroShotCoT),
    PlannerName("chain-of-thought", _chain_of_thought, ("cot",)),
    PlannerName("input-output", _input_output, ("io",)),
    PlannerName("self-consistency", _self_consistency, ("sc",)),
    PlannerName("tree-of-thoughts", TreeOfThoughts, ("tot",)),
    PlannerName("decompose", Decompose, ("plan-and-execute",)),
)
_BY_NAME = {n: entry for entry in PLANNERS for n in (entry.name, *entry.aliases)}


def planner_name(name: str, among: Collection[str] | None = None, *, what: str = "planner"
                 ) -> str:
    """The planner's own name for ``name`` or an alias of it ("sc" -> "self-consistency").

    ``among`` limits the names to some planners' own names (a benchmark's methods). Raises
    ConfigurationError, listing the names that are accepted, for any other; ``what`` is the word
    for a name there ("planner", "method").
    """
    entry = _BY_NAME.get(name) if isinstance(name, str) else None
    if entry is not None and (among is None or entry.name in among):
        return entry.name
    usable = ", ".join(str(e) for e in PLANNERS if among is None or e.name in among)
    raise ConfigurationError(f"unknown {what} {name!r}: use one of {usable}")


def make_planner(name: str | Mapping[str, Any], **options: Any) -> Planner:
    """A planner from its name or alias and keyword ``options`` for its class, or from a mapping
    ``{"type": name, **options}`` (an agent spec's form).

    ``make_planner("sc", k=5)`` is ``SelfConsistency(5)``; ``make_planner("cot",
    examples=[...])`` a ``ChainOfThought``; ``make_planner("io", examples=[...])`` the same with
    the examples' answers alone (standard prompting). Raises ConfigurationError for an unknown
    name (listing the known ones) or options the planner does not take.
    """
    if isinstance(name, Mapping):
        options = {**name, **options}
        name = options.pop("type", None)
    name = planner_name(name)
    try:
        return _BY_NAME[name].factory(**options)
    except (TypeError, ValueError) as exc:  # ConfigurationError is a ValueError too
        raise ConfigurationError(f"planner {name!r}: {exc}") from None
