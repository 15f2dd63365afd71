"""App factory: `uvicorn app.main:app` from the api/ folder (or `--app-dir api` from the repo root).

Production: several worker processes, uvloop and httptools (see api/README.md):
    uvicorn app.main:app --host 0.0.0.0 --port 8000 --workers 4 --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.api.lists import CachedReads, ResultCache
from app.api.main import api_router
from app.api.routes.dashboard import STATIC
from app.core import errors, observability as obs
from app.core.audit import AccessAuditMiddleware, AuditWriter
from app.core.clients import ClientStore, bootstrap_client
from app.core.config import Settings, get_settings
from app.core.db import make_pool
from app.core.odata import metadata_xml
from app.core.ratelimit import RateLimiter
from app.core.security import Tokens
from app.resources import ODATA_SETS
from fluxo import __version__

logger = logging.getLogger("fluxo.api.main")

DESCRIPTION = """
Transaction metrics of the fluxo warehouse for dashboards (Power BI, Tableau, Looker), curated
transactions, quality results, pipeline runs and the outlier history.

Get a token with `POST /auth/token` (OAuth2 client credentials), then call e.g.
`GET /metrics/daily?from=YYYY-MM-DD&to=YYYY-MM-DD` with `Authorization: Bearer <token>`.
Each resource needs its scope (`metrics:read`, `transactions:read`, `quality:read`, `runs:read`,
`outliers:read`). Lists take `from`/`to` (from ≤ to, at most 366 days); the finer ones are paged
(`limit`, `cursor`, `offset`, and a `Link: rel="next"` header on full pages); `?format=csv` answers CSV.
An OData v4 feed of the metric sets is at `/odata/`. Decimal amounts are JSON strings with two
decimals; dates are ISO 8601. Every error has one JSON shape (`ErrorBody`).
"""


async def _bootstrap(settings: Settings) -> None:
    """Create the development client; the warehouse may come up after the API, so keep trying."""
    delay = 1.0
    await asyncio.sleep(delay)
    while True:
        try:
            if await asyncio.to_thread(bootstrap_client, settings):
                logger.warning("created the development client", extra={"fields": {"client_id": settings.client_id}})
            return
        except Exception as exc:
            logger.error("development client not created yet", extra={"fields": {"error": type(exc).__name__}})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


async def _pool_gauges(pool) -> None:
    """Every worker keeps its pool gauges current (Prometheus sums the live workers' values)."""
    while True:
        obs.update_pool_gauges(pool)
        await asyncio.sleep(1.0)


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    obs.clean_dead_workers()
    pool = make_pool(settings)
    await pool.open(wait=False)
    app.state.pool = pool
    app.state.audit = AuditWriter(settings, pool)
    app.state.audit.start()
    app.state.clients = ClientStore(settings, pool)
    gauges = asyncio.create_task(_pool_gauges(pool))
    bootstrap = None
    if settings.client_id and settings.client_secret:
        try:  # before the first request when the warehouse is up, so a token works at once
            if await asyncio.to_thread(bootstrap_client, settings):
                logger.warning("created the development client", extra={"fields": {"client_id": settings.client_id}})
        except Exception:
            bootstrap = asyncio.create_task(_bootstrap(settings))
    # what start-up allocated lives as long as the worker: out of the collector's sight, a full
    # collection under load walks only the requests' own objects (shorter pauses, a lower p99)
    gc.freeze()
    try:
        yield
    finally:
        gauges.cancel()
        if bootstrap:
            bootstrap.cancel()
        await app.state.audit.close()
        await pool.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    obs.configure_logging()
    app = FastAPI(title="fluxo query API", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.tokens = Tokens(settings)
    app.state.token_limiter = RateLimiter(settings.token_rate_per_second, settings.token_rate_burst)
    app.state.cache = ResultCache(settings.cache_ttl_seconds, settings.cache_max_entries)
    app.state.odata_metadata = metadata_xml(ODATA_SETS)
    app.include_router(api_router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
    errors.install(app)
    app.add_middleware(CachedReads)
    # Added last, so it runs first: every request, cached or not, is counted and audited.
    app.add_middleware(AccessAuditMiddleware, settings=settings)
    return app


app = create_app()
