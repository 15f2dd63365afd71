"""App factory: `uvicorn app.main:app` from the api/ folder (or `--app-dir api` from the repo root)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.api.main import api_router
from app.core.audit import AccessAuditMiddleware, configure_logging, note
from app.core.config import Settings, get_settings
from fluxo import __version__

DESCRIPTION = """
Transaction metrics of the fluxo warehouse for dashboards (Power BI, Tableau, Looker): per day,
per day × merchant, MCC, country × channel, per hour, and the outlier summary.

Get a token with `POST /auth/token` (OAuth2 client credentials), then call
`GET /metrics/daily?from=YYYY-MM-DD&to=YYYY-MM-DD` with `Authorization: Bearer <token>`.
The finer grains are paged (`limit`, `offset`, and a `Link: rel="next"` header on full pages).
Decimal amounts are JSON strings with two decimals; dates are ISO 8601.
"""


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    if not getattr(request.state, "audit_detail", {}).get("reason"):
        note(request, reason="invalid request parameters")
    return await request_validation_exception_handler(request, exc)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging()
    app = FastAPI(title="fluxo query API", version=__version__, description=DESCRIPTION)
    app.state.settings = settings
    app.include_router(api_router)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_middleware(AccessAuditMiddleware, settings=settings)
    return app


app = create_app()
