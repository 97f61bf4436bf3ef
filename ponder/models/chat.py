"""Chat models behind the resilience policy: ``chat_model("openai:gpt-4o-mini")``, with
fallback models that answer when it fails for good (``fallbacks=[...]``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from ponder.config import ConfigurationError, Settings
from ponder.models.providers import import_error, resolve
from ponder.models.quotas import ResiliencePolicy
from ponder.models.retries import ModelCallError, falls_back
from ponder.models.runner import PolicyRunner, estimate_tokens
from ponder.models.usage import SELF_RECORDING, UsageLog
from ponder.sync import run_sync

log = logging.getLogger("ponder.models")

# The call option under which bind_tools hands each fallback its own provider's formatting of
# the tools (a fallback may be of another provider than the model it stands in for).
FALLBACK_TOOLS = "ponder_fallback_tools"


class ResilientChatModel(BaseChatModel):
    """A chat model whose every call passes the resilience policy before reaching ``inner``.

    ``fallbacks`` are models tried in order when a call fails for good (see
    ``retries.falls_back``: a 5xx, timeout or rate limit left after the retries, a context-length
    error, a content-filter refusal), each under its own policy; a stream falls back only before
    its first output. The model that answered is in the usage record (``ModelCall.provider`` and
    ``.model``, in this model's ``usage`` too) and in the reply's ``response_metadata``
    (``model_name``, ``model_provider``). A fallback's own fallbacks are not used.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseChatModel
    provider: str
    model_name: str
    policy: ResiliencePolicy = Field(default_factory=ResiliencePolicy)
    usage: UsageLog = Field(default_factory=UsageLog, exclude=True)
    endpoint: str = ""
    fallbacks: list[ResilientChatModel] = Field(default_factory=list)

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
        bound = dict(self.inner.bind_tools(tools, **kwargs).kwargs)
        if self.fallbacks:
            bound[FALLBACK_TOOLS] = [dict(m.inner.bind_tools(tools, **kwargs).kwargs)
                                     for m in self.fallbacks]
        return self.bind(**bound)

    def with_policy(self, **changes: Any) -> ResilientChatModel:
        """The same model (and fallbacks) under a changed policy (e.g. ``timeout_s=5``); usage
        is shared."""
        return self.model_copy(update={
            "policy": replace(self.policy, **changes),
            "fallbacks": [m.with_policy(**changes) for m in self.fallbacks]})

    def _runner(self) -> PolicyRunner:
        return PolicyRunner(self.provider, self.model_name, self.policy, self.endpoint,
                             self.usage)

    def _chain(self, kwargs: dict[str, Any]) -> list[tuple[ResilientChatModel, dict[str, Any]]]:
        """This model and its fallbacks, in order, each with its call options."""
        own = {k: v for k, v in kwargs.items() if k != FALLBACK_TOOLS}
        tools = kwargs.get(FALLBACK_TOOLS) or [{} for _ in self.fallbacks]
        return [(self, own), *((m, {**own, **t}) for m, t in zip(self.fallbacks, tools,
                                                                 strict=True))]

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
        chain, failures = self._chain(kwargs), []
        for n, (model, options) in enumerate(chain):
            last = n == len(chain) - 1
            try:
                result = await model._call(messages, stop, options)
            except ModelCallError as exc:
                if last or not falls_back(exc):
                    raise _chain_error(exc, failures) from exc
                failures.append(_failed(model, chain[n + 1][0], str(exc)))
                continue
            if not last and result.generations and _filtered(result.generations[0]):
                failures.append(_failed(model, chain[n + 1][0], "a content filter stopped "
                                        "its answer"))
                continue
            for generation in result.generations:
                _answered_by(generation, model)
            return result
        raise AssertionError("unreachable: the last model returns or raises")

    async def _call(self, messages: list[BaseMessage], stop: list[str] | None,
                    kwargs: dict[str, Any]) -> ChatResult:
        """One call of this model alone (not its fallbacks), under its policy."""
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
        chain, failures = self._chain(kwargs), []
        for n, (model, options) in enumerate(chain):
            last, named = n == len(chain) - 1, False
            held: list[ChatGenerationChunk] | None = []  # chunks before any output; then None
            limit = model._max_tokens(options)
            chunks = model._runner().stream(
                lambda model=model, options=options: model.inner._astream(
                    messages, stop=stop, **options),
                estimate_tokens((str(m.content) for m in messages), limit),
                limit,
            )
            try:
                async for chunk in chunks:
                    info = {**(chunk.generation_info or {}), **chunk.message.response_metadata}
                    named = named or "model_name" in info
                    if held is not None and not last and _filtered_info(info):
                        # Filtered before any output: the next model may answer instead.
                        failures.append(_failed(model, chain[n + 1][0], "a content filter "
                                                "stopped its answer"))
                        break
                    if held is not None and not _output(chunk):
                        held.append(chunk)  # the caller sees them only once this model answers
                        continue
                    for early in held or ():
                        yield early
                    held = None
                    yield chunk
                else:
                    for early in held or ():
                        yield early
                    if not named:  # chunks' metadata strings are joined: name it only once
                        yield ChatGenerationChunk(message=AIMessageChunk(
                            content="", response_metadata={"model_name": model.model_name}))
                    return
            except ModelCallError as exc:
                # Once output has reached the caller another model cannot take over.
                if held is None or last or not falls_back(exc):
                    raise _chain_error(exc, failures) from exc
                failures.append(_failed(model, chain[n + 1][0], str(exc)))
            finally:
                await chunks.aclose()

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Sync callers share the async policy (and its limits) through one background loop.
        return run_sync(lambda: self._agenerate(messages, stop=stop, **kwargs))


def _filtered(generation: ChatGeneration) -> bool:
    """Whether a content filter stopped this reply (OpenAI's ``finish_reason``)."""
    return _filtered_info({**(generation.generation_info or {}),
                           **generation.message.response_metadata})


def _filtered_info(metadata: dict[str, Any]) -> bool:
    return metadata.get("finish_reason") == "content_filter"


def _output(chunk: ChatGenerationChunk) -> bool:
    """Whether a chunk carries output the caller sees (text or a tool call)."""
    return bool(chunk.message.content or getattr(chunk.message, "tool_call_chunks", None))


def _answered_by(generation: ChatGeneration, model: ResilientChatModel) -> None:
    """Name the model that answered in the reply's metadata, unless its provider did."""
    for key, value in (("model_name", model.model_name), ("model_provider", model.provider)):
        if key not in (generation.generation_info or {}):
            generation.message.response_metadata.setdefault(key, value)


def _failed(model: ResilientChatModel, next_model: ResilientChatModel, why: str) -> str:
    log.warning("%s failed (%s); %s answers instead", model.spec, why, next_model.spec)
    return f"{model.spec}: {why}"


def _chain_error(exc: ModelCallError, failures: list[str]) -> ModelCallError:
    """The error of the last model tried, naming the models that failed before it."""
    if not failures:
        return exc
    return ModelCallError(f"every model failed: {'; '.join(failures)}; and then {exc}",
                          status=exc.status, attempts=exc.attempts)


def chat_model(
    spec: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    policy: ResiliencePolicy | None = None,
    settings: Settings | None = None,
    fallbacks: Sequence[str | BaseChatModel] = (),
    **options: Any,
) -> ResilientChatModel:
    """A LangChain chat model for ``spec`` ("provider:model"), behind the resilience policy.

    ``spec`` defaults to ``PONDER_MODEL``; ``base_url`` and ``api_key`` to ``OPENAI_BASE_URL``
    and ``OPENAI_API_KEY`` for OpenAI-compatible providers. Other ``options`` (temperature, ...)
    go to the provider's model class.

    ``fallbacks`` answer, in order, when a call fails for good (see ``ResilientChatModel``):
    provider strings (built under the same policy, with this model's ``base_url`` and
    ``api_key`` when of the same provider) or chat models (another endpoint: build it with
    ``chat_model``; any other LangChain model is put behind the policy). ConfigurationError,
    naming the entry, for a fallback that is not a model or a valid provider string.
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
    policy = policy or ResiliencePolicy.from_settings(s)
    usage = UsageLog()  # shared with the fallbacks: model.usage counts whoever answered
    chain = [_fallback(entry, n, provider, base_url, api_key, policy, s, usage)
             for n, entry in enumerate(fallbacks)]
    return ResilientChatModel(
        inner=inner,
        provider=provider,
        model_name=name,
        policy=policy,
        usage=usage,
        endpoint=options.get("base_url", ""),
        fallbacks=chain,
    )


def _fallback(entry: str | BaseChatModel, n: int, provider: str, base_url: str | None,
              api_key: str | None, policy: ResiliencePolicy, s: Settings,
              usage: UsageLog) -> ResilientChatModel:
    """One entry of ``fallbacks`` as a model behind the policy, recording into ``usage``."""
    if isinstance(entry, ResilientChatModel):
        return entry.model_copy(update={"usage": usage, "fallbacks": []})
    if isinstance(entry, BaseChatModel):
        name = getattr(entry, "model_name", None) or getattr(entry, "model", None) or \
            entry._llm_type
        return ResilientChatModel(inner=entry, provider=entry._llm_type, model_name=str(name),
                                  policy=policy, usage=usage)
    if not isinstance(entry, str):
        raise ConfigurationError(
            f"fallbacks[{n}] is a {type(entry).__name__}: give a provider:model string (e.g. "
            "openai:gpt-4.1-mini) or a chat model")
    same = entry.strip().partition(":")[0].lower() == provider
    try:
        model = chat_model(entry, base_url=base_url if same else None,
                           api_key=api_key if same else None, policy=policy, settings=s)
    except ConfigurationError as exc:
        raise ConfigurationError(f"fallbacks[{n}] {entry!r}: {exc}") from None
    return model.model_copy(update={"usage": usage})


def supports_response_format(model: BaseChatModel) -> bool:
    """Whether ``model`` takes OpenAI's ``response_format`` call option (JSON Schema and JSON
    object modes): an OpenAI-compatible LangChain model, or a ResilientChatModel whose models
    (fallbacks included) all are."""
    from langchain_openai.chat_models.base import BaseChatOpenAI

    if isinstance(model, ResilientChatModel):
        return all(isinstance(m.inner, BaseChatOpenAI) for m in [model, *model.fallbacks])
    return isinstance(model, BaseChatOpenAI)


def as_chat_model(model: BaseChatModel | str | None) -> BaseChatModel:
    """A chat model as given, or built from a provider string (None: ``PONDER_MODEL``)."""
    return chat_model(model) if model is None or isinstance(model, str) else model
