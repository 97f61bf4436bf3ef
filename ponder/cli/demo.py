"""`ponder demo`: the example agent end to end, offline without a model."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage
from rich.markup import escape

from ponder.agents.agent import Agent
from ponder.cli.common import (
    app,
    console,
)
from ponder.config import Settings
from ponder.models import chat_model, track_usage


@app.command()
def demo() -> None:
    """Run the example agent end to end: profile, knowledge, a tool, a persisted thread."""
    from ponder.demo import QUESTIONS, demo_agent

    settings = Settings.from_env()
    if settings.model:
        console.print(f"Using the configured model {settings.model} (PONDER_MODEL).")
        agent = demo_agent(chat_model(settings.model))
    else:
        console.print("No model is configured (PONDER_MODEL is not set): running on the offline "
                      "scripted model. Set PONDER_MODEL=openai:gpt-4o-mini to use a real one.")
        agent = demo_agent()
    thread_id = f"demo-{uuid.uuid4().hex[:8]}"
    console.print(f"Agent [bold]{agent.name}[/]: {escape(agent.profile.role)}; knowledge: the "
                  f"shop handbook; tools: calculator; thread {thread_id} in "
                  f"{settings.database_url}\n")
    asyncio.run(_demo(agent, QUESTIONS, thread_id))


async def _demo(agent: Agent, questions: tuple[str, ...], thread_id: str) -> None:
    try:
        with track_usage() as usage:
            for question in questions:
                console.print(f"[bold cyan]you ›[/] {escape(question)}")
                async for update in agent.astream(question, thread_id=thread_id):
                    for node, change in update.items():
                        _show_step(node, change or {})
                console.print()
        snapshot = await agent.aget_state(thread_id)
        console.print(f"[dim]The thread holds {len(snapshot.values['messages'])} messages, "
                      f"persisted; {usage.calls} model calls, {usage.total_tokens} tokens. "
                      f"Continue it: ponder chat ponder.demo:demo_agent --thread {thread_id}[/]")
    finally:
        await agent.aclose()


def _show_step(node: str, change: dict[str, Any]) -> None:
    if node == "recall":
        found = (change.get("context") or "nothing").split("\n")[0]
        console.print(f"  [dim]recall  ↳ {escape(found[:90])}…[/]")
    for message in change.get("messages", []):
        if isinstance(message, AIMessage) and message.tool_calls:
            for call in message.tool_calls:
                args = escape(json.dumps(call["args"]))
                console.print(f"  [dim]act     → {call['name']}({args})[/]")
        elif isinstance(message, ToolMessage):
            console.print(f"  [dim]tools   ↳ {escape(str(message.content))}[/]")
        elif isinstance(message, AIMessage):
            console.print(f"[bold green]agent ›[/] {escape(message.text)}")
