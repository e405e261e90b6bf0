"""Prometheus metrics: requests by route/method/status, bytes sent, latency, cache hits/misses.

Each app owns its :class:`CollectorRegistry` (several apps may live in one process in tests).
With ``--workers N`` every worker process counts its own requests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.cache import ByteLRU

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class _CacheCollector(Collector):
    def __init__(self, caches: list[ByteLRU]) -> None:
        self.caches = caches

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        hits = CounterMetricFamily("distill_cache_hits", "cache lookups that hit", labels=["cache"])
        miss = CounterMetricFamily(
            "distill_cache_misses", "cache lookups that missed", labels=["cache"]
        )
        size = GaugeMetricFamily("distill_cache_bytes", "bytes held by the cache", labels=["cache"])
        gone = CounterMetricFamily(
            "distill_cache_evicted_bytes", "bytes evicted to stay within budget", labels=["cache"]
        )
        for c in self.caches:
            hits.add_metric([c.name], c.hits)
            miss.add_metric([c.name], c.misses)
            size.add_metric([c.name], c.size)
            gone.add_metric([c.name], c.evicted)
        yield from (hits, miss, size, gone)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        labels = ["route", "method", "status"]
        self.requests = Counter("distill_requests", "HTTP requests", labels, registry=r)
        self.bytes = Counter("distill_response_bytes", "body bytes sent", ["route"], registry=r)
        self.latency = Histogram(
            "distill_request_seconds", "request latency", ["route"], buckets=_BUCKETS, registry=r
        )
        self.inflight = Gauge("distill_inflight_requests", "requests in progress", registry=r)

    def watch_caches(self, caches: list[ByteLRU]) -> None:
        self.registry.register(_CacheCollector(caches))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware) recording every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status, sent = 500, 0

        async def record(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, record)
        finally:
            self.metrics.inflight.dec()
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            m = self.metrics
            m.requests.labels(label, scope["method"], str(status)).inc()
            m.bytes.labels(label).inc(sent)
            m.latency.labels(label).observe(time.perf_counter() - t0)
