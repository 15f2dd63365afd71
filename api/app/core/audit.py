"""Access audit: every HTTP request becomes one row in audit.api_access and one JSON log line.

Route dependencies describe the outcome through the request state (who the
caller proved to be, why a request was refused); the middleware reads it after
the response has been sent, so a failing audit insert never changes the answer.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode

import anyio
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import db
from app.core.config import Settings

logger = logging.getLogger("fluxo.api.access")

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Query keys whose values must never reach the audit table or the logs.
_SECRET_KEYS = {"client_secret", "access_token", "token", "password", "secret", "code"}

INSERT_ACCESS = """
    INSERT INTO audit.api_access
        (principal, method, path, query, status_code, client_ip, duration_ms, detail)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
"""


def set_principal(request: Request, principal: str) -> None:
    request.state.principal = principal


def note(request: Request, **detail: Any) -> None:
    """Add facts (never secrets) to the audit detail of this request."""
    request.state.audit_detail = {**getattr(request.state, "audit_detail", {}), **detail}


@dataclass(frozen=True)
class AccessEntry:
    principal: str | None
    method: str
    path: str
    query: str | None
    status_code: int
    client_ip: str | None
    duration_ms: float
    detail: dict[str, Any]


def redact_query(raw: str) -> str | None:
    if not raw:
        return None
    pairs = parse_qsl(raw, keep_blank_values=True)
    if not any(key.lower() in _SECRET_KEYS for key, _ in pairs):
        return raw
    return urlencode([(k, "REDACTED" if k.lower() in _SECRET_KEYS else v) for k, v in pairs])


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID.match(candidate):
                return candidate
    return uuid.uuid4().hex


def write_access(settings: Settings, entry: AccessEntry) -> None:
    with db.connect(settings) as conn:
        conn.execute(
            INSERT_ACCESS,
            (
                entry.principal,
                entry.method,
                entry.path,
                entry.query,
                entry.status_code,
                entry.client_ip,
                entry.duration_ms,
                json.dumps(entry.detail, sort_keys=True),
            ),
        )


class AccessAuditMiddleware:
    """Pure ASGI middleware, so streaming responses and exceptions are seen as they are."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        request_id = _incoming_request_id(scope)
        state["request_id"] = request_id
        status_code = 500  # what the caller sees if the app dies before answering

        async def send_with_request_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            client = scope.get("client")
            entry = AccessEntry(
                principal=state.get("principal"),
                method=scope["method"],
                path=scope["path"],
                query=redact_query(scope.get("query_string", b"").decode("latin-1")),
                status_code=status_code,
                client_ip=client[0] if client else None,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                detail={"request_id": request_id, **state.get("audit_detail", {})},
            )
            # Shielded: a client that hangs up must still leave its trace.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._record, entry)

    def _record(self, entry: AccessEntry) -> None:
        logger.info("api access", extra={"fields": asdict(entry)})
        try:
            write_access(self.settings, entry)
        except Exception as exc:  # the answer is already sent; losing the row must be loud
            logger.error(
                "audit insert failed",
                extra={"fields": {"request_id": entry.detail["request_id"], "error": f"{type(exc).__name__}: {exc}"}},
            )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """One JSON line per event on stderr for the fluxo.api loggers (uvicorn keeps its own)."""
    root = logging.getLogger("fluxo.api")
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
