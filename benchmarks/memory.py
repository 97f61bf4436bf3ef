"""What memory costs a reply, and what a long conversation costs the database.

    python -m benchmarks.memory --json

A scripted model answers after 0.2 s (a realistic call); embeddings come from the fake OpenAI
server over HTTP. ``reply_ms_without_memory`` / ``reply_ms_with_memory``: the median reply time
of an agent with no memory, and of the same agent with a knowledge base (hybrid search),
long-term memory (recalled before the turn, written in the background after it) and
conversation memory. ``stored_bytes_500_turns``: the SQLite files (checkpoints and memories)
after one 500-turn thread; ``prompt_tokens_turn_500``: the prompt of its last model call,
against ``prompt_budget_tokens`` (the conversation budget plus the system message).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from langchain_core.messages import SystemMessage
from langchain_core.messages.utils import count_tokens_approximately

from ponder import Agent
from ponder.memory import ConversationMemory
from ponder.memory.knowledge import Document, KnowledgeBase
from ponder.memory.longterm import LongTermMemory
from ponder.models import embeddings
from ponder.testing import FakeOpenAIServer, ScriptedChatModel

LATENCY_S = 0.2
BUDGET = 2000
HANDBOOK = [Document(f"Tea number {i} costs {i + 5} euros and steeps for {i % 5 + 1} minutes.",
                     f"tea-{i}") for i in range(50)]


def _model(latency: float, prompts: list | None = None) -> ScriptedChatModel:
    def reply(messages):
        system = messages[0].content if isinstance(messages[0], SystemMessage) else ""
        if system.startswith("From this conversation turn"):
            user = messages[-1].content.splitlines()[0].removeprefix("User: ")[:60]
            return json.dumps([{"fact": f"The user asked: {user}", "importance": 4}])
        if system.startswith("Summarise"):
            return "The user has asked many questions about teas and prices."
        if system.startswith(("You keep a memory", "Here are memories")):
            return "NEW" if system.startswith("You keep") else "[]"
        if prompts is not None:
            prompts.append(messages)
        return "Tea number 3 costs 8 euros. " * 4
    return ScriptedChatModel(replies=reply, latency=latency)


async def _agent(folder: Path, server: FakeOpenAIServer, with_memory: bool, latency: float,
                 prompts: list | None = None) -> Agent:
    url = f"sqlite:///{folder}/ponder.db"
    if not with_memory:
        return Agent("bench", _model(latency, prompts), checkpointer=url)
    vectors = embeddings("openai:text-embedding-3-small", base_url=server.base_url,
                         api_key="bench")
    kb = KnowledgeBase(url, embeddings=vectors, sources=HANDBOOK)
    longterm = LongTermMemory(url, model=_model(latency), embeddings=vectors,
                              reflect_every=1000)
    return Agent("bench", _model(latency, prompts), memory=[kb, longterm], checkpointer=url,
                 conversation=ConversationMemory(max_tokens=BUDGET))


async def reply_ms(with_memory: bool, turns: int, server: FakeOpenAIServer) -> float:
    with tempfile.TemporaryDirectory() as folder:
        agent = await _agent(Path(folder), server, with_memory, LATENCY_S)
        await agent.aask("warm up", thread_id="warm", user_id="u0")
        times = []
        for i in range(turns):
            started = time.perf_counter()
            await agent.aask(f"How much is tea number {i % 50}?", thread_id=f"t{i % 4}",
                             user_id=f"u{i % 4}")
            times.append((time.perf_counter() - started) * 1000)
        await agent.aclose()
    return statistics.median(times)


async def long_thread(server: FakeOpenAIServer, turns: int = 500) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as folder:
        prompts: list = []
        agent = await _agent(Path(folder), server, True, 0.0, prompts)
        for i in range(turns):
            await agent.aask(f"Turn {i}: which tea steeps longest, and what does number "
                             f"{i % 50} cost?", thread_id="long", user_id="u")
        await agent.aclose()
        stored = await asyncio.to_thread(_size, folder)
        system_tokens = count_tokens_approximately(prompts[-1][:1])
        return {"stored_bytes_500_turns": stored,
                "prompt_tokens_turn_500": count_tokens_approximately(prompts[-1]),
                "prompt_budget_tokens": BUDGET + system_tokens,
                "max_prompt_tokens": max(count_tokens_approximately(p) for p in prompts)}


def _size(folder: str) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir())


async def main(turns: int) -> dict:
    with FakeOpenAIServer() as server:
        without = await reply_ms(False, turns, server)
        with_memory = await reply_ms(True, turns, server)
        return {"latency_per_call_s": LATENCY_S, "turns": turns,
                "reply_ms_without_memory": round(without, 1),
                "reply_ms_with_memory": round(with_memory, 1),
                "ratio": round(with_memory / without, 3),
                **await long_thread(server)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main(args.turns))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
