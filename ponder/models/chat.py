"""Chat models behind the resilience policy: ``chat_model("openai:gpt-4o-mini")``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from ponder.config import Settings
from ponder.models.providers import import_error, resolve
from ponder.models.quotas import ResiliencePolicy
from ponder.models.runner import PolicyRunner, estimate_tokens
from ponder.models.usage import SELF_RECORDING, UsageLog
from ponder.sync import run_sync


class ResilientChatModel(BaseChatModel):
    """A chat model whose every call passes the resilience policy before reaching ``inner``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseChatModel
    provider: str
    model_name: str
    policy: ResiliencePolicy = Field(default_factory=ResiliencePolicy)
    usage: UsageLog = Field(default_factory=UsageLog, exclude=True)
    endpoint: str = ""

    @property
    def _llm_type(self) -> str:
        return f"{SELF_RECORDING}{self.provider}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"provider": self.provider, "model_name": self.model_name}

    @property
    def spec(self) -> str:
        """The model as a provider string, "provider:model"."""
        return f"{self.provider}:{self.model_name}"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any):
        """This model with ``tools`` bound in the provider's format (LangChain's bind_tools)."""
        # The provider formats the tool schemas; the call itself still goes through us.
        return self.bind(**self.inner.bind_tools(tools, **kwargs).kwargs)

    def with_policy(self, **changes: Any) -> ResilientChatModel:
        """The same model under a changed policy (e.g. ``timeout_s=5``); usage is shared."""
        return self.model_copy(update={"policy": replace(self.policy, **changes)})

    def _runner(self) -> PolicyRunner:
        return PolicyRunner(self.provider, self.model_name, self.policy, self.endpoint,
                             self.usage)

    def _max_tokens(self, kwargs: dict[str, Any]) -> int | None:
        """The call's output limit: its own ``max_tokens``, else the provider model's."""
        limit = kwargs.get("max_tokens") or getattr(self.inner, "max_tokens", None)
        return limit if isinstance(limit, int) and limit > 0 else None

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        limit = self._max_tokens(kwargs)
        return await self._runner().call(
            lambda: self.inner._agenerate(messages, stop=stop, **kwargs),
            estimate_tokens((str(m.content) for m in messages), limit),
            lambda result: result.generations[0].message.usage_metadata
            if result.generations else None,
            limit,
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        limit = self._max_tokens(kwargs)
        chunks = self._runner().stream(
            lambda: self.inner._astream(messages, stop=stop, **kwargs),
            estimate_tokens((str(m.content) for m in messages), limit),
            limit,
        )
        async for chunk in chunks:
            yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Sync callers share the async policy (and its limits) through one background loop.
        return run_sync(lambda: self._agenerate(messages, stop=stop, **kwargs))


def chat_model(
    spec: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    policy: ResiliencePolicy | None = None,
    settings: Settings | None = None,
    **options: Any,
) -> ResilientChatModel:
    """A LangChain chat model for ``spec`` ("provider:model"), behind the resilience policy.

    ``spec`` defaults to ``PONDER_MODEL``; ``base_url`` and ``api_key`` to ``OPENAI_BASE_URL``
    and ``OPENAI_API_KEY`` for OpenAI-compatible providers. Other ``options`` (temperature, ...)
    go to the provider's model class.
    """
    from langchain.chat_models import init_chat_model
    from langchain.chat_models.base import _BUILTIN_PROVIDERS

    s = settings or Settings.from_env()
    provider, name = resolve(spec or s.model, "PONDER_MODEL", _BUILTIN_PROVIDERS, s, base_url,
                              api_key, options)
    if provider == "openai":
        options.setdefault("stream_usage", True)  # usage in streams too
    try:
        inner = init_chat_model(name, model_provider=provider, **options)
    except ImportError as exc:
        raise import_error(provider, exc) from exc
    return ResilientChatModel(
        inner=inner,
        provider=provider,
        model_name=name,
        policy=policy or ResiliencePolicy.from_settings(s),
        endpoint=options.get("base_url", ""),
    )


def as_chat_model(model: BaseChatModel | str | None) -> BaseChatModel:
    """A chat model as given, or built from a provider string (None: ``PONDER_MODEL``)."""
    return chat_model(model) if model is None or isinstance(model, str) else model
