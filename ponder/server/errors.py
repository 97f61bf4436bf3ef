"""Errors as OpenAI-style objects: ``{"error": {"message", "type", "param", "code"}}``.

No stack trace ever reaches a client: unexpected failures are logged and answered with a
generic message.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ponder.errors import PonderError
from ponder.models import BudgetExceeded

log = logging.getLogger("ponder.server")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error"}


class APIError(PonderError):
    """An error answered to the client as an OpenAI-style error object with HTTP ``status``.

    ``param`` names the offending request field, ``code`` is a machine-readable code, ``headers``
    are added to the response (e.g. ``Retry-After``).
    """
    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers


def error_response(status: int, message: str, *, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    """An error response both kinds of client read: OpenAI's ``{"error": {"message", "type",
    "param", "code"}}`` (its ``type`` from the status, ``server_error`` for any not listed) and
    the LangGraph Agent Server's ``{"detail": message}``."""
    return JSONResponse(
        {"error": {"message": message, "type": _TYPES.get(status, "server_error"),
                   "param": param, "code": code}, "detail": message},
        status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as an OpenAI-style error object: APIError as it says, a
    spent budget as 429 ``budget_exceeded``, an invalid request as 400 naming the first bad
    field, HTTPException with its status, and anything else as a logged 500 with a generic
    message."""
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return error_response(exc.status, exc.message, param=exc.param, code=exc.code,
                              headers=exc.headers)

    @app.exception_handler(BudgetExceeded)
    async def _budget(request: Request, exc: BudgetExceeded):
        # A budget (the key's per day, or the agent's) has no room for the next model call.
        return error_response(429, str(exc), code="budget_exceeded",
                              headers={"x-should-retry": "false"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first['msg']}" if where else first["msg"]
        return error_response(400, f"Invalid request: {message}", param=where or None)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "The server had an error while processing your request.")
