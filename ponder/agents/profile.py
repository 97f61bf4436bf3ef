"""Profile: who the agent is. Rendered into the system message of every model call it makes."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import SystemMessage
from pydantic import BaseModel, ConfigDict, field_validator


class Profile(BaseModel):
    """Role, goal, backstory, instructions, constraints and output style of an agent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str = "a helpful assistant"
    goal: str | None = None
    backstory: str | None = None
    instructions: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    output_style: str | None = None

    @field_validator("instructions", "constraints", mode="before")
    @classmethod
    def _lines(cls, value: str | Sequence[str] | None) -> tuple[str, ...]:
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else tuple(value)

    def render(self, name: str | None = None) -> str:
        """The system prompt text: one section per field that is set."""
        who = f"You are {name}, {self.role}." if name else f"You are {self.role}."
        parts = [who.replace("..", ".")]
        if self.goal:
            parts.append(f"Your goal: {self.goal}")
        if self.backstory:
            parts.append(f"Background: {self.backstory}")
        if self.instructions:
            parts.append("Instructions:\n" + "\n".join(f"- {i}" for i in self.instructions))
        if self.constraints:
            parts.append("Constraints:\n" + "\n".join(f"- {c}" for c in self.constraints))
        if self.output_style:
            parts.append(f"Output style: {self.output_style}")
        return "\n\n".join(parts)

    def system_message(self, name: str | None = None, *extra: str | None) -> SystemMessage:
        """The profile's system message, with extra sections (recalled context, a plan) after."""
        return SystemMessage(content="\n\n".join([self.render(name), *(e for e in extra if e)]))
