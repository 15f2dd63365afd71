"""Prometheus metrics (multiprocess-safe) and JSON logs carrying the request id.

With several worker processes set PROMETHEUS_MULTIPROC_DIR to an empty directory shared by
them: every worker writes its samples there and `/ops/metrics` sums them. Files of workers
that died are cleaned when a worker starts.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess,
)

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

REQUESTS = Counter("fluxo_api_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "fluxo_api_request_duration_seconds", "Time from request to the last response byte", ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
POOL_SIZE = Gauge("fluxo_api_pool_connections", "Open warehouse connections", multiprocess_mode="livesum")
POOL_IN_USE = Gauge("fluxo_api_pool_connections_in_use", "Warehouse connections lent out", multiprocess_mode="livesum")
POOL_WAITING = Gauge("fluxo_api_pool_requests_waiting", "Requests waiting for a connection", multiprocess_mode="livesum")
POOL_MAX = Gauge("fluxo_api_pool_max_connections", "Pool size limit", multiprocess_mode="livesum")
AUDIT_QUEUE = Gauge("fluxo_api_audit_queue_depth", "Audit rows waiting to be written", multiprocess_mode="livesum")
AUDIT_WRITTEN = Counter("fluxo_api_audit_rows_written_total", "Audit rows stored in the warehouse")
AUDIT_FAILURES = Counter("fluxo_api_audit_write_failures_total", "Audit batches the warehouse refused (retried)")
AUTH_FAILURES = Counter("fluxo_api_auth_failures_total", "Refused authentications", ["kind"])


_children: dict[tuple[str, str, int], tuple] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency (label children are looked up once)."""
    key = (method, route, status)
    children = _children.get(key)
    if children is None:
        children = (REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route))
        if len(_children) < 10_000:
            _children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def update_pool_gauges(pool) -> None:
    stats = pool.get_stats()
    size, available = stats.get("pool_size", 0), stats.get("pool_available", 0)
    POOL_SIZE.set(size)
    POOL_IN_USE.set(size - available)
    POOL_WAITING.set(stats.get("requests_waiting", 0))
    POOL_MAX.set(pool.max_size)


def clean_dead_workers() -> None:
    """Drop the live-gauge files of worker processes that no longer run."""
    if not MULTIPROC_DIR:
        return
    for path in Path(MULTIPROC_DIR).glob("gauge_live*_*.db"):
        match = re.search(r"_(\d+)\.db$", path.name)
        if not match:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, MULTIPROC_DIR)
        except PermissionError:
            pass


def exposition() -> tuple[bytes, str]:
    if MULTIPROC_DIR:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# --- logs -------------------------------------------------------------------------------------

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def json_line(created: float, level: str, logger: str, message: str, request_id: str | None,
              fields: dict[str, Any]) -> str:
    """One log event as the JSON line every fluxo.api log line is."""
    payload: dict[str, Any] = {
        "ts": datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds"),
        "level": level, "logger": logger, "message": message,
    }
    if request_id:
        payload["request_id"] = request_id
    payload.update(fields)
    return json.dumps(payload, default=str)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", {}))
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json_line(record.created, record.levelname, record.name, record.getMessage(), request_id_var.get(),
                         fields)


def configure_logging(level: int = logging.INFO) -> None:
    """One JSON line per event on stderr for the fluxo.api loggers and uvicorn's error log."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    for name in ("fluxo.api", "uvicorn.error", "psycopg.pool"):
        logger = logging.getLogger(name)
        if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
            continue
        logger.handlers = [handler]
        logger.setLevel(level if name != "psycopg.pool" else logging.WARNING)
        logger.propagate = False
