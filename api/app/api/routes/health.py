"""Liveness, readiness and Prometheus metrics, without authentication (for orchestrators)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse

from app.core import observability as obs
from app.core.db import connection
from app.core.errors import ApiError
from app.models import Health
from fluxo import __version__

router = APIRouter(tags=["health"])
logger = logging.getLogger("fluxo.api.health")


@router.get("/healthz", summary="The process answers (liveness)")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


async def _ready(request: Request) -> JSONResponse:
    try:
        async with connection(request.app.state.pool, timeout=2.0) as conn:
            await conn.execute("select 1")
    except ApiError:
        logger.error("warehouse readiness check failed")
        body = Health(status="unavailable", version=__version__, database="unreachable")
        return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                            headers={"Retry-After": "2"})
    return JSONResponse(Health(status="ok", version=__version__, database="ok").model_dump())


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}},
            summary="The warehouse answers (readiness)")
async def readyz(request: Request) -> JSONResponse:
    return await _ready(request)


@router.get("/health", response_model=Health, responses={503: {"model": Health}},
            summary="Same as /readyz (kept for existing probes)")
async def health(request: Request) -> JSONResponse:
    return await _ready(request)


@router.get("/ops/metrics", include_in_schema=False)
async def prometheus(request: Request) -> Response:
    obs.update_pool_gauges(request.app.state.pool)
    body, content_type = obs.exposition()
    return Response(body, media_type=content_type)
