"""Liveness and warehouse reachability, without authentication (for orchestrators and load balancers)."""

from __future__ import annotations

import logging

import psycopg
from fastapi import APIRouter, Response, status

from app.api.deps import SettingsDep
from app.core import db
from app.models import Health
from fluxo import __version__

router = APIRouter(tags=["health"])
logger = logging.getLogger("fluxo.api.health")


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
def health(settings: SettingsDep, response: Response) -> Health:
    try:
        with db.connect(settings) as conn:
            conn.execute("select 1").fetchone()
    except psycopg.Error as exc:
        logger.error("warehouse health check failed: %s", type(exc).__name__)
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(status="unavailable", version=__version__, database="unreachable")
    return Health(status="ok", version=__version__, database="ok")
