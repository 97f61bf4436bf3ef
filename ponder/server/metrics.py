"""Prometheus-style counters at ``/metrics``: requests, errors, tokens, cost and latency."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any


class Metrics:
    """Counters for ``/metrics``: requests by (method, route, status), seconds by (method, route),
    tokens by agent and US dollars by agent (of the calls whose price is known)."""
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.seconds: Counter[tuple[str, str]] = Counter()
        self.tokens: Counter[str] = Counter()
        self.cost_usd: Counter[str] = Counter()

    def add_tokens(self, agent: str, tokens: int) -> None:
        """Count ``tokens`` used by ``agent``."""
        self.tokens[agent] += tokens

    def add_cost(self, agent: str, cost_usd: float) -> None:
        """Count ``cost_usd`` (US dollars) spent by ``agent``."""
        self.cost_usd[agent] += cost_usd

    def render(self) -> str:
        """The counters in Prometheus' text format: requests, errors (status 400 and above),
        request seconds (sum and count), tokens and cost."""
        lines = ["# TYPE ponder_requests_total counter"]
        lines += [f'ponder_requests_total{{method="{m}",route="{r}",status="{s}"}} {n}'
                  for (m, r, s), n in sorted(self.requests.items())]
        lines.append("# TYPE ponder_errors_total counter")
        errors = Counter()
        for (m, r, s), n in self.requests.items():
            if s >= 400:
                errors[(m, r, s)] += n
        lines += [f'ponder_errors_total{{method="{m}",route="{r}",status="{s}"}} {n}'
                  for (m, r, s), n in sorted(errors.items())]
        lines.append("# TYPE ponder_request_seconds summary")
        counts = Counter()
        for (m, r, _), n in self.requests.items():
            counts[(m, r)] += n
        for (m, r), total in sorted(self.seconds.items()):
            lines.append(f'ponder_request_seconds_sum{{method="{m}",route="{r}"}} {total:.6f}')
            lines.append(f'ponder_request_seconds_count{{method="{m}",route="{r}"}} '
                         f'{counts[(m, r)]}')
        lines.append("# TYPE ponder_tokens_total counter")
        lines += [f'ponder_tokens_total{{agent="{a}"}} {n}' for a, n in sorted(self.tokens.items())]
        lines.append("# TYPE ponder_cost_usd_total counter")
        lines += [f'ponder_cost_usd_total{{agent="{a}"}} {n:.9f}'
                  for a, n in sorted(self.cost_usd.items())]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Counts every HTTP request by route template (not raw path: ids would explode labels)."""

    def __init__(self, app: Callable[..., Awaitable[Any]], metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        """Count an HTTP request (a response that never started counts as 500) and its seconds."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            key = (scope["method"], route)
            self.metrics.requests[(*key, status)] += 1
            self.metrics.seconds[key] += time.perf_counter() - started
