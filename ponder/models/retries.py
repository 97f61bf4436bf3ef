"""Which failures of a model call are worth retrying (rate limits, 5xx, timeouts, broken
streams), and which are not (an exhausted quota, a bad request); how long a provider asks us to
wait; the error a call that failed for good raises."""

from __future__ import annotations

import email.utils
import json
import re
import time

from langchain_core.exceptions import ContextOverflowError, ModelRefusalError

from ponder.errors import PonderError


class ModelCallError(PonderError, RuntimeError):
    """A model call failed for good: after its retries, or with an error retrying cannot fix."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a failed call, when the error carries one."""
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    # Only error statuses count: a garbled 200 body is a transport fault, not an answer.
    return status if isinstance(status, int) and status >= 400 else None


# Error codes and types (lower case, letters only, so InsufficientQuota matches too) by which
# OpenAI and the servers that copy its errors say the account has no quota or credit left. Some
# come with a 429, the status of a rate limit, but no wait makes them pass: only the account's
# plan or billing can.
_QUOTA_CODES = frozenset({
    "insufficientquota",  # the code and type of OpenAI's "You exceeded your current quota" 429
    "billinghardlimitreached",  # the account's spending limit
    "billingnotactive",  # no payment method, or the billing account is inactive
})
# Anthropic says it only in words, with the 400 of any invalid request.
_QUOTA_MESSAGES = ("credit balance is too low",)


def _error_codes(exc: BaseException) -> set[str]:
    """The machine-readable ``code``, ``type`` and ``status`` of a provider's error body."""
    body = getattr(exc, "body", None)
    if body is None:
        response = getattr(exc, "response", None)
        try:
            body = response.json() if response is not None else None
        except Exception:  # an unread, streamed or non-JSON body carries no codes
            body = None
    # The OpenAI SDK keeps the inner error object; Anthropic's and raw bodies wrap it in "error".
    errors = [body, body.get("error")] if isinstance(body, dict) else []
    values = [getattr(exc, "code", None), getattr(exc, "type", None)]
    values += [e.get(key) for e in errors if isinstance(e, dict)
               for key in ("code", "type", "status")]
    return {re.sub(r"[^a-z]", "", v.lower()) for v in values if isinstance(v, str)}


def is_quota_exhausted(exc: BaseException) -> bool:
    """Whether the provider refused the call because the account's quota or credit is used up."""
    status = status_of(exc)
    if status is None:
        return False
    # 402 Payment Required is how OpenRouter, DeepSeek and others say the balance is spent.
    return (status == 402 or bool(_error_codes(exc) & _QUOTA_CODES)
            or any(words in str(exc).lower() for words in _QUOTA_MESSAGES))


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the call may succeed: rate limits, 5xx, timeouts and connection errors,
    not an exhausted quota, a bad request or a stream that had already produced output."""
    if isinstance(exc, BrokenStream):
        return False  # tokens already reached the caller: a retry would repeat them
    if is_quota_exhausted(exc):
        return False  # a 429 like a rate limit's, but waiting does not refill the account
    status = status_of(exc)
    if status is not None:
        return status in (408, 409, 429) or status >= 500
    # Timeouts, refused or dropped connections, and bodies cut or garbled in transit.
    names = {cls.__name__ for cls in type(exc).__mro__}
    return isinstance(exc, (TimeoutError, ConnectionError, json.JSONDecodeError)) or bool(
        names & {"APIConnectionError", "APITimeoutError", "TransportError", "APIError"}
    )


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds the provider asked us to wait (``Retry-After``: seconds or an HTTP date)."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None  # unreadable: fall back to our own backoff


def describe(exc: BaseException) -> str:
    """A one-line description of a failed call for messages: status and the error's text."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    status = status_of(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"HTTP {status}: {text}" if status and str(status) not in text else text


# How providers say a request is longer than the model's context window, besides LangChain's
# ContextOverflowError: OpenAI's code, Anthropic's and vLLM's words.
_CONTEXT_CODES = frozenset({"contextlengthexceeded"})
_CONTEXT_MESSAGES = ("maximum context length", "prompt is too long", "context window")
# How OpenAI and Azure OpenAI say the request or the answer was stopped by a content filter.
_FILTER_CODES = frozenset({"contentfilter", "contentpolicyviolation"})


def is_context_overflow(exc: BaseException) -> bool:
    """Whether the request was longer than the model's context window (LangChain's
    ``ContextOverflowError``, or a provider's 400 saying so)."""
    if isinstance(exc, ContextOverflowError):
        return True
    return status_of(exc) in (400, 413) and (
        bool(_error_codes(exc) & _CONTEXT_CODES)
        or any(words in str(exc).lower() for words in _CONTEXT_MESSAGES))


def is_content_filtered(exc: BaseException) -> bool:
    """Whether a content filter or the model refused the request (LangChain's
    ``ModelRefusalError``, or a provider's error whose code says so)."""
    if isinstance(exc, ModelRefusalError):
        return True
    return status_of(exc) is not None and bool(_error_codes(exc) & _FILTER_CODES)


def falls_back(error: BaseException) -> bool:
    """Whether another model may answer where this call failed for good: a 5xx, timeout,
    connection error or rate limit left after the retries, an exhausted quota (another account
    may have some), a context-length error, or a content-filter refusal. Not a bad request,
    bad credentials, or a stream that had already produced output."""
    cause = error.__cause__ if isinstance(error, ModelCallError) and error.__cause__ else error
    return (is_transient(cause) or is_quota_exhausted(cause) or is_context_overflow(cause)
            or is_content_filtered(cause))


class BrokenStream(PonderError):
    """A stream failed after it had produced output."""
