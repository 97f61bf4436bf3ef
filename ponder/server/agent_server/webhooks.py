"""Webhooks: when a run that named a ``webhook`` ends, its Run (with ``values``, or ``error``) is
POSTed there, signed, and retried with backoff while the receiver fails.

The signature is ``X-Ponder-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact body bytes
with the server's secret (``PONDER_WEBHOOK_SECRET``), so a receiver can check that the call came
from this server and was not altered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from typing import Any
from urllib.parse import urlparse

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from ponder.server.errors import APIError

log = logging.getLogger("ponder.server.webhooks")
SECRET_ENV = "PONDER_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-Ponder-Signature"


def check_webhook(url: str) -> str:
    """``url`` if a webhook may be sent there: an http(s) URL with a host, and a secret to sign
    with (422 otherwise, saying what to fix)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise APIError(422, f"webhook {url!r} is not an http(s) URL: give the full address, "
                            "e.g. https://example.com/hooks/runs", param="webhook")
    if not os.environ.get(SECRET_ENV):
        raise APIError(422, f"webhooks are signed, and {SECRET_ENV} is not set on the server: "
                            "set it to a long random string, shared with the receiver",
                       param="webhook")
    return url


def signature(body: bytes, secret: str) -> str:
    """The ``X-Ponder-Signature`` value of ``body``: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code in (408, 429)
    return isinstance(exc, httpx.TransportError)


async def deliver(url: str, payload: dict[str, Any], *, attempts: int = 5,
                  backoff_s: float = 1.0) -> bool:
    """POST ``payload`` to ``url``, signed; retried on connection errors, 408, 429 and 5xx
    (waits of ``backoff_s`` doubling, ``attempts`` in all). Whether it was delivered."""
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    headers = {"Content-Type": "application/json",
               SIGNATURE_HEADER: signature(body, os.environ.get(SECRET_ENV, ""))}
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(attempts), reraise=True,
                    wait=wait_exponential(multiplier=backoff_s, max=60),
                    retry=retry_if_exception(_retryable)):
                with attempt:
                    (await http.post(url, content=body, headers=headers)).raise_for_status()
        return True
    except httpx.HTTPError as exc:
        log.warning("webhook %s for run %s failed: %s", url, payload.get("run_id"), exc)
        return False
