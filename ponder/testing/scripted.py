"""ScriptedChatModel: a deterministic, in-process LangChain chat model for tests."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from ponder.testing.script import Reply, ReplyFunction, Script, count_tokens, forced_tool_name


class ScriptedChatModel(BaseChatModel):
    """A chat model whose replies come from a list (used in turn) or a function of the messages.

    ``latency`` delays each reply (in seconds, without blocking the event loop);
    ``tokens_per_second`` paces streamed chunks. Usage is counted in words unless a reply
    carries its own ``usage_metadata``. ``calls`` holds the messages of every call, in order.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    replies: Sequence[Reply] | ReplyFunction = Field(default_factory=list)
    latency: float = 0.0
    tokens_per_second: float | None = None
    model_name: str = "scripted"
    _script: Script = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        """Make the script from ``replies``."""
        self._script = Script(self.replies)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def calls(self) -> list[list[BaseMessage]]:
        """The messages of every call so far, in order."""
        return self._script.received

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any):
        """The model with ``tools`` bound in OpenAI's format (and ``tool_choice``, when given)."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    # -- replies --------------------------------------------------------------------------------

    def _finish(self, message: AIMessage, messages: list[BaseMessage]) -> AIMessage:
        if message.usage_metadata:
            return message
        prompt = count_tokens(" ".join(str(m.content) for m in messages))
        output = count_tokens(str(message.content)) + sum(
            len(call["args"]) + 1 for call in message.tool_calls
        )
        return message.model_copy(update={"usage_metadata": {
            "input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output,
        }})

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        forced = forced_tool_name(kwargs.get("tool_choice"), kwargs.get("tools"))
        message = await self._script.anext(messages, forced)
        if self.latency:
            await asyncio.sleep(self.latency)
        return ChatResult(generations=[ChatGeneration(message=self._finish(message, messages))])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        forced = forced_tool_name(kwargs.get("tool_choice"), kwargs.get("tools"))
        message = self._script.next(messages, forced)
        if self.latency:
            time.sleep(self.latency)
        return ChatResult(generations=[ChatGeneration(message=self._finish(message, messages))])

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        forced = forced_tool_name(kwargs.get("tool_choice"), kwargs.get("tools"))
        message = self._finish(await self._script.anext(messages, forced), messages)
        if self.latency:
            await asyncio.sleep(self.latency)
        gap = 1 / self.tokens_per_second if self.tokens_per_second else 0.0
        for i, chunk in enumerate(_chunks(message)):
            if gap and i:
                await asyncio.sleep(gap)
            yield chunk

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        forced = forced_tool_name(kwargs.get("tool_choice"), kwargs.get("tools"))
        message = self._finish(self._script.next(messages, forced), messages)
        if self.latency:
            time.sleep(self.latency)
        yield from _chunks(message)


def _chunks(message: AIMessage) -> Iterator[ChatGenerationChunk]:
    """Split a reply into word chunks, then one chunk per tool call, then the usage."""
    for piece in re.findall(r"\s*\S+", str(message.content)) or [""]:
        yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
    for index, call in enumerate(message.tool_calls):
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="",
            tool_call_chunks=[{
                "name": call["name"], "args": json.dumps(call["args"]), "id": call["id"],
                "index": index, "type": "tool_call_chunk",
            }],
        ))
    yield ChatGenerationChunk(
        message=AIMessageChunk(content="", usage_metadata=message.usage_metadata,
                               response_metadata=message.response_metadata,
                               chunk_position="last")
    )

