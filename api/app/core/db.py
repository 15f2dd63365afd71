"""Warehouse connections: one asyncio pool per worker process (psycopg_pool), sized by settings.

Connections are autocommit, UTC, with a statement timeout. A request that finds no free
connection within `pool_timeout_seconds`, or a warehouse that does not answer, is a 503
with `Retry-After`, never a hang or a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from app.core.config import Settings
from app.core.errors import ApiError

RETRY_AFTER_SECONDS = "2"


def connection_kwargs(settings: Settings) -> dict:
    return {
        "autocommit": True,
        "connect_timeout": settings.db_connect_timeout_seconds,
        "application_name": "fluxo-api",
        "options": f"-c statement_timeout={settings.statement_timeout_ms} -c TimeZone=UTC",
    }


def make_pool(settings: Settings) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        settings.database_url.get_secret_value(),
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        kwargs=connection_kwargs(settings),
        timeout=settings.pool_timeout_seconds,
        open=False,
        name="fluxo-api",
        max_idle=300,
        reconnect_timeout=0,  # keep trying in the background; requests get 503 meanwhile
    )


def unavailable(what: str = "warehouse unavailable") -> ApiError:
    return ApiError(503, what, "temporarily_unavailable", headers={"Retry-After": RETRY_AFTER_SECONDS})


@asynccontextmanager
async def connection(pool: AsyncConnectionPool, timeout: float | None = None) -> AsyncIterator[psycopg.AsyncConnection]:
    """A pooled connection; a busy pool or an unreachable warehouse becomes a 503."""
    try:
        async with pool.connection(timeout=timeout) as conn:
            yield conn
    except PoolTimeout as exc:
        raise unavailable("warehouse unavailable (no free connection)") from exc
    except psycopg.OperationalError as exc:
        raise unavailable() from exc


def connect_sync(settings: Settings) -> psycopg.Connection:
    """A plain connection for the CLI and start-up tasks (never on the request path)."""
    return psycopg.connect(settings.database_url.get_secret_value(), **connection_kwargs(settings))
