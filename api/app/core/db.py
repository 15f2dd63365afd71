"""Warehouse connections (psycopg 3).

psycopg_pool is not part of the pinned stack, so each request opens its own
short-lived connection; on localhost or inside the compose network that costs
a few milliseconds.
"""

from __future__ import annotations

import psycopg

from app.core.config import Settings


def connect(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(
        settings.database_url.get_secret_value(),
        connect_timeout=settings.db_connect_timeout_seconds,
        autocommit=True,
        application_name="fluxo-api",
    )
