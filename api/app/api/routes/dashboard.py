"""The dashboard page: static HTML and a vendored chart library, no CDN. The page asks for a
token with the client credentials typed into its login form, keeps it in memory only, and
draws every `Series` of the entity sets (app.resources) the token may read."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from app.resources import ENTITY_SETS

STATIC = Path(__file__).resolve().parents[2] / "static"
# The page runs only its own scripts and talks only to this API.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")

router = APIRouter(tags=["dashboard"], include_in_schema=False)


@router.get("/dashboard")
async def dashboard_redirect() -> RedirectResponse:
    return RedirectResponse("/dashboard/", status_code=308)


@router.get("/dashboard/")
async def dashboard() -> FileResponse:
    return FileResponse(STATIC / "dashboard" / "index.html", headers={
        "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache"})


@router.get("/dashboard/series.json")
async def series(request: Request) -> JSONResponse:
    """What the page draws: one chart per series, fed by the entity set's REST route."""
    return JSONResponse([
        {"title": s.title, "path": e.path, "scope": e.scope, "value": s.value, "unit": s.unit, "per_day": s.per_day,
         "day": e.day_column, "paged": e.paged}
        for e in ENTITY_SETS for s in e.series
    ])
