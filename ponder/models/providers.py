"""Provider strings ("provider:model"), the settings that complete them, and clear errors for
what is missing."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from ponder.config import ConfigurationError, Settings
from ponder.models.http import openai_async_client

_EXAMPLES = (
    "try PONDER_MODEL=openai:gpt-4o-mini (with OPENAI_API_KEY), "
    "PONDER_MODEL=ollama:qwen2.5, or PONDER_MODEL=openai:<name> with "
    "OPENAI_BASE_URL=http://localhost:8000/v1 for any OpenAI-compatible server"
)


def _split_spec(spec: str | None, setting: str) -> tuple[str, str]:
    if not spec or not spec.strip():
        raise ConfigurationError(f"{setting} is not set: {_EXAMPLES}")
    provider, sep, name = spec.strip().partition(":")
    if not sep or not provider or not name:
        raise ConfigurationError(
            f"{setting}={spec!r} is not a provider:model string: write e.g. openai:gpt-4o-mini"
        )
    return provider.lower(), name


def _check_base_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigurationError(
            f"base URL {url!r} is malformed: write the full address with its scheme, e.g. "
            "OPENAI_BASE_URL=http://localhost:11434/v1 (Ollama) or http://localhost:8000/v1 (vLLM)"
        )
    try:
        parsed.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ConfigurationError(f"base URL {url!r} has an invalid port") from None
    return url.rstrip("/")


def _openai_options(base_url: str | None, api_key: str | None, what: str) -> dict[str, Any]:
    if base_url:
        # OpenAI-compatible servers (vLLM, LM Studio, Ollama's /v1) rarely check the key.
        return {"base_url": _check_base_url(base_url), "api_key": api_key or "not-needed"}
    if not api_key:
        raise ConfigurationError(
            f"OPENAI_API_KEY is not set, and {what} uses OpenAI: set OPENAI_API_KEY=sk-..., or "
            "OPENAI_BASE_URL=http://localhost:11434/v1 for Ollama (any OpenAI-compatible URL works)"
        )
    return {"api_key": api_key}


def resolve(spec: str | None, setting: str, providers: dict, s: Settings, base_url: str | None,
             api_key: str | None, options: dict[str, Any]) -> tuple[str, str]:
    """Split and check a provider spec; fill ``options`` with the endpoint and credentials."""
    provider, name = _split_spec(spec, setting)
    if provider not in providers:
        raise ConfigurationError(
            f"unknown {'model' if setting == 'PONDER_MODEL' else 'embeddings'} provider "
            f"{provider!r} in {spec!r}: use one of {', '.join(sorted(providers))}; {_EXAMPLES}")
    if provider == "openai":
        options.update(_openai_options(base_url or s.openai_base_url, api_key or s.openai_api_key,
                                       f"{provider}:{name}"))
        options.setdefault("max_retries", 0)  # our policy is the only retry loop
        options.setdefault("http_async_client", openai_async_client())
    elif base_url:
        options["base_url"] = _check_base_url(base_url)
    return provider, name


def import_error(provider: str, exc: ImportError) -> ConfigurationError:
    """The ConfigurationError naming the LangChain package a provider needs."""
    package = f"langchain-{provider.replace('_', '-')}"
    return ConfigurationError(
        f"provider {provider!r} needs the {package} package: pip install {package}"
    )
