"""Prometheus metrics: request counts and latency per endpoint, the loaded version, fallbacks.

With several uvicorn workers, ``recsys serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` so that every
worker writes its samples there and ``/metrics`` aggregates all workers; without it the figures
are those of the worker that answered.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from service import MULTIPROC_ENV

REQUESTS = Counter("recsys_http_requests_total", "HTTP requests answered.", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "recsys_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
MODEL_LOADED = Gauge(
    "recsys_model_loaded",
    "1 for the model version this process serves.",
    ["version", "model"],
    multiprocess_mode="liveall",
)
FALLBACKS = Counter("recsys_fallbacks_total", "Requests answered with popular items.", ["reason"])
RELOADS = Counter("recsys_model_reloads_total", "Model versions loaded after start-up.")


def set_loaded_version(version: str, model: str, previous: tuple[str, str] | None) -> None:
    if previous is not None:
        MODEL_LOADED.labels(*previous).set(0)
    MODEL_LOADED.labels(version, model).set(1)


def render() -> tuple[bytes, str]:
    """The exposition text: aggregated over workers in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every request by route template (``/users/{user_id}/recommendations``).

    A plain ASGI middleware: Starlette's BaseHTTPMiddleware would add a task per request. The
    labelled children are looked up once per (endpoint, method, status) and kept: ``labels()``
    costs more than the observation itself, which matters on a sub-millisecond request.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_with_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            # path_format: the template without convertors ("{user_id}", not "{user_id:path}").
            key = (getattr(route, "path_format", "unmatched"), scope["method"], status[0])
            children = self._children.get(key)
            if children is None:
                endpoint, method, code = key
                children = REQUESTS.labels(endpoint, method, str(code)), LATENCY.labels(endpoint)
                self._children[key] = children
            count, latency = children
            count.inc()
            latency.observe(time.perf_counter() - started)
