"""The Agent Server's store routes over LangGraph's store in ponder's database: items put, got,
deleted and searched by namespace, and namespaces listed. With API keys in use, each key has a
store of its own (its namespaces live under ``("ponder-key", key_id)``, which it never sees).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from fastapi import APIRouter, Request, Response
from langgraph.store.base import BaseStore, Item
from pydantic import Field

from ponder.db.persistence import open_store, stop_batching
from ponder.server.agent_server.requests import MAX_OFFSET, RequestBody, caller_key
from ponder.server.agent_server.shapes import jsonable
from ponder.server.errors import APIError

_SCOPE = "ponder-key"


class PutItem(RequestBody):
    """``PUT /store/items``."""
    namespace: list[str] = Field(min_length=1)
    key: str = Field(min_length=1)
    value: dict[str, Any]


class ItemRef(RequestBody):
    """``DELETE /store/items``."""
    namespace: list[str] = Field(min_length=1)
    key: str = Field(min_length=1)


class SearchItems(RequestBody):
    """``POST /store/items/search``: by namespace prefix and equality ``filter`` on values."""
    namespace_prefix: list[str] = Field(default_factory=list)
    filter: dict[str, Any] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class ListNamespaces(RequestBody):
    """``POST /store/namespaces``."""
    prefix: list[str] | None = None
    suffix: list[str] | None = None
    max_depth: int | None = Field(default=None, ge=1, le=100)
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


_FIELD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")
_OPERATORS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"}
_SCALARS = (str, int, float, bool, type(None))


def _check(namespace: list[str], param: str = "namespace") -> tuple[str, ...]:
    for label in namespace:
        if not label or "." in label or "\x00" in label:
            raise APIError(422, f"Namespace label {label!r} must be a non-empty string without "
                                "periods", param=param)
    return tuple(namespace)


def _check_key(key: str) -> str:
    if "\x00" in key:
        raise APIError(422, "a store key may not hold NUL characters", param="key")
    return key


def _check_filter(wanted: dict[str, Any] | None) -> dict[str, Any] | None:
    """A filter the store can run: field names, each with a value or ``{operator: value}``
    (``$eq``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte``); 422 saying what is wrong."""
    for name, value in (wanted or {}).items():
        if not _FIELD.match(name):
            raise APIError(422, f"filter field {name!r} is not a field name: use letters, "
                                "digits, '_', '-' and '.'", param="filter")
        tests = value if isinstance(value, dict) else {"$eq": value}
        for operator, operand in tests.items():
            if operator not in _OPERATORS:
                raise APIError(422, f"filter operator {operator!r} of {name!r} is not one of "
                                    f"{', '.join(sorted(_OPERATORS))}", param="filter")
            if not isinstance(operand, _SCALARS) or (isinstance(operand, str)
                                                     and "\x00" in operand):
                raise APIError(422, f"filter value of {name!r} must be a string, number, "
                                    "boolean or null", param="filter")
    return wanted


class AgentStore:
    """LangGraph's store on ``url``, opened on first use, scoped per caller's key."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._store: BaseStore | None = None
        self._closers: list = []
        self._opening = asyncio.Lock()

    async def store(self) -> BaseStore:
        """The store, opened once."""
        async with self._opening:
            if self._store is None:
                self._store, self._closers = await open_store(self.url)
        return self._store

    @staticmethod
    def scoped(namespace: tuple[str, ...], key: str | None) -> tuple[str, ...]:
        """Where ``key``'s namespace lives in the shared store."""
        return (_SCOPE, key, *namespace) if key else namespace

    @staticmethod
    def unscoped(namespace: tuple[str, ...], key: str | None) -> tuple[str, ...]:
        """A stored namespace as ``key`` sees it."""
        return namespace[2:] if key else namespace

    def item(self, item: Item, key: str | None) -> dict[str, Any]:
        """An item as the API shows it."""
        shown = jsonable(item.dict())
        shown["namespace"] = list(self.unscoped(tuple(item.namespace), key))
        return shown

    async def aclose(self) -> None:
        """Close the store's connections."""
        if self._store is not None:
            stop_batching(self._store)
            for close in reversed(self._closers):
                await close()
            self._store, self._closers = None, []


def router(store: AgentStore) -> APIRouter:
    """The store routes."""
    api = APIRouter()

    @api.put("/store/items", status_code=204)
    async def put_item(body: PutItem, request: Request) -> Response:
        key = caller_key(request)
        if "\\u0000" in json.dumps(body.value):
            raise APIError(422, "a stored value may not hold NUL characters", param="value")
        try:
            await (await store.store()).aput(store.scoped(_check(body.namespace), key),
                                             _check_key(body.key), body.value)
        except (TypeError, ValueError) as exc:  # e.g. text no JSON encoder takes (lone surrogates)
            raise APIError(422, f"the value cannot be stored: {exc}", param="value") from None
        return Response(status_code=204)

    @api.get("/store/items")
    async def get_item(namespace: str, key: str, request: Request) -> Any:
        caller = caller_key(request)
        found = await (await store.store()).aget(
            store.scoped(_check(namespace.split(".")), caller), _check_key(key))
        return store.item(found, caller) if found else None

    @api.delete("/store/items", status_code=204)
    async def delete_item(body: ItemRef, request: Request) -> Response:
        await (await store.store()).adelete(
            store.scoped(_check(body.namespace), caller_key(request)), _check_key(body.key))
        return Response(status_code=204)

    @api.post("/store/items/search")
    async def search_items(body: SearchItems, request: Request) -> dict[str, Any]:
        caller = caller_key(request)
        prefix = _check(body.namespace_prefix, "namespace_prefix")
        found = await (await store.store()).asearch(
            store.scoped(prefix, caller), filter=_check_filter(body.filter),
            limit=body.limit, offset=body.offset)
        return {"items": [store.item(i, caller) for i in found]}

    @api.post("/store/namespaces")
    async def list_namespaces(body: ListNamespaces, request: Request) -> dict[str, Any]:
        caller = caller_key(request)
        prefix = store.scoped(_check(body.prefix or [], "prefix"), caller)
        _check(body.suffix or [], "suffix")
        depth = body.max_depth + (2 if caller else 0) if body.max_depth else None
        found = await (await store.store()).alist_namespaces(
            prefix=prefix or None, suffix=tuple(body.suffix) if body.suffix else None,
            max_depth=depth, limit=body.limit, offset=body.offset)
        shown = [list(store.unscoped(ns, caller)) for ns in found]
        if not caller:  # other keys' stores are theirs
            shown = [ns for ns in shown if not ns or ns[0] != _SCOPE]
        return {"namespaces": shown}

    return api
