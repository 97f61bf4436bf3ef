"""Declarative agents: a YAML file with the name, model, profile, tools, knowledge and planner.

```yaml
name: tea-guide
model: openai:gpt-4o-mini          # optional: PONDER_MODEL otherwise
fallbacks: [openai:gpt-4.1-mini]   # optional: models that answer when the model fails
profile:
  role: the assistant of a small tea shop
  instructions: [Quote prices from the handbook, Use the calculator for totals]
tools: [calculator, myshop.tools:stock_level]   # built-in names or module:attr
knowledge: [handbook.md, faq/*.md]               # files (relative to this spec) for a
                                                 # knowledge base in PONDER_DATABASE_URL
planner: self-consistency                        # or sc, or {type: tot, breadth: 3} (the
                                                 # names of agents/planning/registry.py),
                                                 # or module:attr for your own Planner
max_steps: 8
mcp:                                             # MCP servers whose tools the agent uses
  files: {command: npx, args: [-y, "@modelcontextprotocol/server-filesystem", .]}
  search: {url: "http://127.0.0.1:8931/mcp", headers: {Authorization: "Bearer ..."}}
output:                                          # optional: the answer as JSON of this
  type: object                                   # JSON Schema (agents/output.py)
  properties: {price: {type: number}, currency: {type: string}}
  required: [price, currency]
approve: {send_order: true, stock_level: false}  # tool approval: true, false, or module:attr of
                                                 # a function of the call's arguments -> bool
```

An ``mcp:`` entry takes ``MCPServer``'s settings (``command``, ``args``, ``env``, ``cwd`` — relative
to the spec, which is also the default — or ``url``, ``headers``; ``tool_name_prefix``,
``max_concurrency``, ``idle_timeout_s``, ``connect_timeout_s``, ``retry_after_s``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ponder.agents.planning.registry import make_planner, planner_name
from ponder.agents.profile import Profile
from ponder.config import ConfigurationError
from ponder.loading import load_object
from ponder.tools.builtin import BUILTIN_TOOLS


class SpecError(ConfigurationError):
    """An agent spec file is missing, unreadable or invalid. The message names the file."""


class MCPServerSpec(BaseModel):
    """An entry of a spec's ``mcp:`` section: ``ponder.tools.mcp.MCPServer``'s settings (its name
    is the entry's key; ``cwd`` is relative to the spec, and defaults to its folder)."""
    model_config = ConfigDict(extra="forbid")

    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    tool_name_prefix: bool = False
    max_concurrency: int | None = None
    idle_timeout_s: float = 600.0
    connect_timeout_s: float = 30.0
    retry_after_s: float = 30.0


class AgentSpec(BaseModel):
    """The fields of an agent spec file; unknown fields are refused.

    ``model`` is a provider:model string (None: ``PONDER_MODEL``); ``tools`` are built-in names or
    module:attr; ``knowledge`` are file patterns relative to the spec; ``planner`` is a name, a
    ``{type: name, ...options}`` mapping or module:attr; ``tool_timeout_s`` is in seconds.
    ``fallbacks`` are provider:model strings (``chat_model``'s; a model given when the spec is
    loaded replaces the model and its fallbacks); ``output`` is a JSON Schema the answer must fit;
    ``approve`` maps tool names to approval policies (true, false or module:attr).
    """
    model_config = ConfigDict(extra="forbid")

    name: str
    model: str | None = None
    fallbacks: list[str] = Field(default_factory=list)
    profile: Profile = Field(default_factory=Profile)
    tools: list[str] = Field(default_factory=list)
    knowledge: list[str] = Field(default_factory=list)
    planner: str | dict[str, Any] | None = None
    max_steps: int = Field(10, ge=1)
    tool_timeout_s: float = Field(30.0, gt=0)
    mcp: dict[str, MCPServerSpec] = Field(default_factory=dict)
    output: dict[str, Any] | None = None
    output_retries: int = Field(2, ge=0)
    approve: dict[str, bool | str] = Field(default_factory=dict)


def load_spec(path: str | Path) -> AgentSpec:
    """Read and validate the YAML agent spec at ``path`` (its shape only: tools, knowledge and the
    planner are resolved by ``agent_arguments``).

    Raises SpecError, its message naming the file, when the file is missing or unreadable, is not
    valid YAML (with the line and column), is not a mapping, or has missing, unknown or invalid
    fields.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"agent spec {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read agent spec {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}"
                        ) from None
    if not isinstance(data, dict):
        raise SpecError(f"{path} must be a YAML mapping with at least 'name:' "
                        f"(found {type(data).__name__})")
    try:
        return AgentSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise SpecError(f"{path} is not a valid agent spec: {problems}") from None


def _problem(error: dict) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        known = ", ".join(AgentSpec.model_fields if len(error["loc"]) == 1 else
                          MCPServerSpec.model_fields if error["loc"][0] == "mcp" else
                          Profile.model_fields)
        return f"unknown field {field!r} (known: {known})"
    if error["type"] == "missing":
        return f"{field} is required"
    return f"{field}: {error['msg']}"


def agent_arguments(path: str | Path) -> dict[str, Any]:
    """The keyword arguments of ``Agent`` that the spec at ``path`` declares, with its tools,
    knowledge base and planner made (``Agent.from_spec`` uses them). Raises SpecError."""
    path = Path(path)
    spec = load_spec(path)
    base = path.parent
    return {"name": spec.name, "model": _model(spec, path), "profile": spec.profile,
            "tools": [*(_tool(ref, base, path) for ref in spec.tools),
                      *(_mcp_server(name, entry, base, path) for name, entry in spec.mcp.items())],
            "memory": _knowledge(spec.name, spec.knowledge, base, path) if spec.knowledge
            else None,
            "planner": _planner(spec.planner, base, path) if spec.planner else None,
            "max_steps": spec.max_steps, "tool_timeout_s": spec.tool_timeout_s,
            "output": spec.output, "output_retries": spec.output_retries,
            "approve": {name: _load(policy, base, path, "approval policy")
                        if isinstance(policy, str) else policy
                        for name, policy in spec.approve.items()} or None}


def _model(spec: AgentSpec, path: Path):
    """The spec's model string, or with ``fallbacks`` the model and its fallbacks."""
    if not spec.fallbacks:
        return spec.model
    from ponder.models import chat_model

    try:
        return chat_model(spec.model, fallbacks=spec.fallbacks)
    except ConfigurationError as exc:
        raise SpecError(f"{path}: {exc}") from None


def _tool(ref: str, base: Path, path: Path):
    if ref in BUILTIN_TOOLS:
        return BUILTIN_TOOLS[ref]
    if ":" not in ref:
        raise SpecError(f"{path}: unknown tool {ref!r}: use a built-in tool "
                        f"({', '.join(sorted(BUILTIN_TOOLS))}) or module:attr")
    return _load(ref, base, path, "tool")


def _mcp_server(name: str, entry: MCPServerSpec, base: Path, path: Path):
    from ponder.tools.mcp import MCPServer  # the mcp extra, needed only by specs that use it

    settings = entry.model_dump(exclude_unset=True)
    if entry.command is not None:
        settings["cwd"] = str((base / (entry.cwd or ".")).resolve())
    try:
        return MCPServer(name, **settings)
    except ConfigurationError as exc:
        raise SpecError(f"{path}: {exc}") from None


def _load(ref: str, base: Path, path: Path, what: str) -> Any:
    try:
        return load_object(ref, base)
    except ConfigurationError as exc:
        raise SpecError(f"{path}: {what} {exc}") from None


def _planner(value: str | dict[str, Any], base: Path, path: Path):
    """A named planner (``self-consistency``, ``sc``, or ``{type: tot, breadth: 3}``: the names
    of ``planning.registry``) or module:attr."""
    options = dict(value) if isinstance(value, dict) else {}
    name = options.pop("type", None) if isinstance(value, dict) else value
    if isinstance(name, str) and ":" in name and not options:
        return _load(name, base, path, "planner")
    try:
        planner_name(name)
    except ConfigurationError as exc:
        raise SpecError(f"{path}: {exc}, or module:attr for your own") from None
    try:
        return make_planner(name, **options)
    except ConfigurationError as exc:
        raise SpecError(f"{path}: {exc}") from None


def _knowledge(name: str, patterns: list[str], base: Path, path: Path):
    """A knowledge base of the files the patterns match, in ``PONDER_DATABASE_URL``: ingested
    before the first search, and again (changed files only) whenever the agent is loaded."""
    from ponder.config import Settings
    from ponder.memory.knowledge import KnowledgeBase

    files: list[Path] = []
    for pattern in patterns:
        found = sorted(p for p in base.glob(pattern) if p.is_file())
        if not found:
            raise SpecError(f"{path}: knowledge source {pattern!r} matches no file "
                            f"(paths are relative to {base.resolve()})")
        files += found
    # One knowledge base per agent name; a name must start with a letter.
    kb_name = "agent_" + re.sub(r"[^a-z0-9_]", "_", name.lower())[:30]
    return KnowledgeBase(name=kb_name, embeddings=Settings.from_env().embeddings,
                         sources=files)
