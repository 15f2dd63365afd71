"""Access audit: every HTTP request becomes one row in audit.api_access and one JSON log line
(written by the same background task, a batch at a time, when the row leaves the queue).

Route code describes the outcome through the request state (who the caller proved to be,
why a request was refused). After the last response byte is sent, the middleware puts the
row on a bounded queue; one background task per worker takes up to `audit_batch_size` rows
at a time and COPYs them in one statement on a pooled connection. Nothing is dropped:
a full queue makes the finishing request wait (back-pressure, after its answer went out);
a batch the warehouse refuses is kept and retried; rows still unwritten at shutdown go to
`audit_spill_dir` (JSON lines) or, without one, to the error log.

Text is stored safely: NUL bytes (which PostgreSQL text cannot hold) and undecodable bytes
are written as backslash escapes, so `GET /health%00` is audited like any other request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode

import anyio
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import observability as obs
from app.core.config import Settings
from fluxo.tokenize import has_pan, mask_pans, opaque_id

logger = logging.getLogger("fluxo.api.access")

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Query keys whose values must never reach the audit table or the logs.
_SECRET_KEYS = {"client_secret", "access_token", "token", "password", "secret", "code"}
# Unauthenticated probes, written to the audit only at `audit_probe_sample`.
PROBE_PATHS = {"/healthz", "/readyz", "/health", "/ops/metrics"}
COLUMNS = ("at", "request_id", "principal", "method", "path", "query", "status_code", "client_ip", "duration_ms",
           "detail")


def set_principal(request: Request, principal: str) -> None:
    request.state.principal = principal


def note(request: Request, **detail: Any) -> None:
    """Add facts (never secrets) to the audit detail of this request."""
    request.state.audit_detail = {**getattr(request.state, "audit_detail", {}), **detail}


def safe_text(value: str | None, limit: int = 4096) -> str | None:
    """Text PostgreSQL can store: NUL and lone surrogates escaped, cut at `limit` characters."""
    if value is None:
        return None
    text = value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True)
class AccessEntry:
    at: datetime
    request_id: str
    principal: str | None
    method: str
    path: str
    query: str | None
    status_code: int
    client_ip: str | None
    duration_ms: float
    detail: dict[str, Any]

    def fields(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "request_id": self.request_id, "principal": self.principal,
                "method": self.method, "path": self.path, "query": self.query, "status_code": self.status_code,
                "client_ip": self.client_ip, "duration_ms": self.duration_ms, "detail": self.detail}

    def row(self) -> tuple:
        detail = json.dumps({"request_id": self.request_id, **self.detail}, sort_keys=True, default=str)
        return (self.at, self.request_id, safe_text(self.principal, 256), safe_text(self.method, 16),
                safe_text(self.path), safe_text(self.query), self.status_code, self.client_ip, self.duration_ms,
                safe_text(detail, 8192))


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def copy_line(row: tuple) -> str:
    """One line of COPY's text format: tab-separated, \\N for NULL, backslash escapes."""
    fields = []
    for value in row:
        if value is None:
            fields.append("\\N")
        elif isinstance(value, datetime):
            fields.append(value.isoformat())
        else:
            fields.append(str(value).translate(_COPY_ESCAPES))
    return "\t".join(fields) + "\n"


def redact_query(raw: str) -> str | None:
    """The query string as the audit keeps it: secrets REDACTED, card numbers masked."""
    if not raw:
        return None
    lowered = raw.lower()
    secret = any(key in lowered for key in _SECRET_KEYS)
    pan = has_pan(unquote_plus(raw))
    if not secret and not pan:  # the common case, without parsing
        return raw
    pairs = parse_qsl(raw, keep_blank_values=True)
    if not pan and not any(key.lower() in _SECRET_KEYS for key, _ in pairs):
        return raw
    return urlencode([(mask_pans(k), "REDACTED" if k.lower() in _SECRET_KEYS else mask_pans(v)) for k, v in pairs],
                     safe="<>*")


def redact_detail(detail: dict[str, Any]) -> dict[str, Any]:
    """The audit detail with card numbers masked: an error description may quote the id it was asked for."""
    return {key: mask_pans(value) if isinstance(value, str) else value for key, value in detail.items()}


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID.match(candidate):
                return candidate
    return opaque_id()


class AuditWriter:
    """The bounded queue and the background task that batches rows into audit.api_access."""

    def __init__(self, settings: Settings, pool) -> None:
        self.settings = settings
        self.pool = pool
        self.queue: asyncio.Queue[AccessEntry] = asyncio.Queue(settings.audit_queue_size)
        self._task: asyncio.Task | None = None
        self._pending: list[AccessEntry] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def put(self, entry: AccessEntry) -> None:
        """Queue a row; when the queue is full, wait (back-pressure), never drop. The wait is
        shielded: a client that hangs up must still leave its trace."""
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            with anyio.CancelScope(shield=True):
                await self.queue.put(entry)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            taken = []
            if not self._pending:
                taken.append(await self.queue.get())
                # a short pause lets a burst gather into one COPY
                await asyncio.sleep(self.settings.audit_flush_seconds if self.queue.qsize() < 50 else 0)
            while len(self._pending) + len(taken) < self.settings.audit_batch_size and not self.queue.empty():
                taken.append(self.queue.get_nowait())
            self._pending.extend(taken)
            try:
                self._log(taken)
            except Exception:  # the log must never stop the writer (puts would wait forever)
                logger.exception("access log lines not written")
            obs.AUDIT_QUEUE.set(self.queue.qsize() + len(self._pending))
            try:
                await self._write(self._pending)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # kept and retried: the warehouse may be back soon
                obs.AUDIT_FAILURES.inc()
                logger.error("audit insert failed", extra={"fields": {
                    "error": f"{type(exc).__name__}: {exc}"[:500], "rows": len(self._pending),
                    "request_ids": [e.request_id for e in self._pending[:50]]}})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.5
            obs.AUDIT_WRITTEN.inc(len(self._pending))
            self._pending = []
            obs.AUDIT_QUEUE.set(self.queue.qsize())

    def _log(self, entries: list[AccessEntry]) -> None:
        """The access log: one JSON line per request, written a batch at a time off the request path."""
        if not entries or not self.settings.access_log or not logger.isEnabledFor(logging.INFO):
            return
        lines = [obs.json_line(e.at.timestamp(), "INFO", logger.name, "api access", e.request_id, e.fields())
                 for e in entries]
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()

    async def _write(self, entries: list[AccessEntry]) -> None:
        # One buffer, one write: awaiting once per row would queue this task behind every
        # connection's task once per row, and under load the queue would fill.
        payload = "".join(copy_line(entry.row()) for entry in entries).encode()
        statement = f"COPY audit.api_access ({', '.join(COLUMNS)}) FROM STDIN"
        async with self.pool.connection(timeout=self.settings.pool_timeout_seconds) as conn:
            async with conn.cursor() as cursor, cursor.copy(statement) as copy:
                await copy.write(payload)

    async def close(self, timeout: float = 10.0) -> None:
        """Flush what is queued; spill what the warehouse would not take."""
        deadline = time.monotonic() + timeout
        while (self.queue.qsize() or self._pending) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        left = self._pending + [self.queue.get_nowait() for _ in range(self.queue.qsize())]
        if left:
            self._spill(left)

    def _spill(self, entries: list[AccessEntry]) -> None:
        lines = [json.dumps(e.fields(), default=str) for e in entries]
        target = self.settings.audit_spill_dir
        if target:
            target = Path(target)
            target.mkdir(parents=True, exist_ok=True)
            path = target / f"api-access-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}.jsonl"
            path.write_text("\n".join(lines) + "\n")
            logger.error("audit rows spilled to a file", extra={"fields": {"rows": len(lines), "path": str(path)}})
        else:
            for line in lines:
                logger.error("audit row not stored", extra={"fields": {"row": line}})


class AccessAuditMiddleware:
    """Pure ASGI middleware: request id, header size cap, metrics, then the audit row."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        at = datetime.now(timezone.utc)
        state = scope.setdefault("state", {})
        request_id = _incoming_request_id(scope)
        state["request_id"] = request_id
        token = obs.request_id_var.set(request_id)
        status_code = 500  # what the caller sees if the app dies before answering

        async def send_with_request_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        try:
            refusal = self._refuse_early(scope)
            if refusal is not None:
                await refusal(scope, receive, send_with_request_id)
            else:
                await self.app(scope, receive, send_with_request_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            obs.observe_request(scope["method"], template, status_code, elapsed)
            client = scope.get("client")
            entry = AccessEntry(
                at=at, request_id=request_id, principal=state.get("principal"), method=scope["method"],
                path=mask_pans(scope["path"]), query=redact_query(scope.get("query_string", b"").decode("latin-1")),
                status_code=status_code, client_ip=client[0] if client else None,
                duration_ms=round(elapsed * 1000, 3), detail=redact_detail(state.get("audit_detail", {})),
            )
            writer: AuditWriter | None = getattr(scope.get("app").state, "audit", None) if scope.get("app") else None
            probe = scope["path"] in PROBE_PATHS and status_code < 500
            obs.request_id_var.reset(token)
            if writer is not None and (not probe or random.random() < self.settings.audit_probe_sample):
                await writer.put(entry)

    def _refuse_early(self, scope: Scope):
        """Oversized headers (431) and NUL bytes in query parameters (422), before any routing."""
        from app.core.errors import error_response

        state = scope["state"]
        size = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ()))
        if size > self.settings.max_header_bytes:
            state["audit_detail"] = {"reason": "request headers too large", "header_bytes": size}
            return error_response(None, 431, f"request headers exceed {self.settings.max_header_bytes} bytes",
                                  request_id=state["request_id"])
        raw = scope.get("query_string", b"")
        if b"%00" in raw or b"\x00" in raw:
            for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
                if "\x00" in key or "\x00" in value:
                    field = safe_text(key, 64)
                    state["audit_detail"] = {"reason": f"NUL byte in query parameter {field}"}
                    return error_response(None, 422, f"{field}: must not contain NUL bytes", "invalid_request",
                                          errors=[{"field": field, "location": "query",
                                                   "message": "must not contain NUL bytes"}],
                                          request_id=state["request_id"])
        return None
