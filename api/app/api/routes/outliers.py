"""The per-transaction outlier history (Delta Lake, read with delta-rs), now or as of a version or time
(scope outliers:read)."""

import asyncio
import io
from datetime import datetime, timedelta
from typing import Annotated, Literal

import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import TypeAdapter

from app.api.deps import reader
from app.api.lists import CSV, FormatParam, WindowDep, wants_csv
from app.core.audit import note
from app.core.db import unavailable
from app.core.errors import invalid, responses
from app.models import OutlierHistoryRow, TableVersion
from fluxo.contract import OUTLIER_METHODS
from fluxo.lake import Lake
from fluxo_platform.lakefs import delta_history, read_outliers

router = APIRouter(prefix="/outliers", tags=["outliers"])
Reader = reader("outliers:read")
_rows = TypeAdapter(list[OutlierHistoryRow])
_versions = TypeAdapter(list[TableVersion])
MAX_ROWS = 10_000


def _uri(request: Request) -> str:
    return Lake(request.app.state.settings.resolved_lake_root).outlier_history


@router.get("/history", response_model=list[OutlierHistoryRow],
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, **responses()},
            summary="Flagged transactions of the day window, latest or as of a version/time")
async def history(
    request: Request, principal: Reader, window: WindowDep,
    transaction_id: Annotated[str | None, Query(max_length=128, pattern=r"^[^\x00-\x1f]+$")] = None,
    method: Literal[OUTLIER_METHODS] | None = None,
    version: Annotated[int | None, Query(ge=0, le=2**31 - 1, description="Delta table version")] = None,
    as_of: Annotated[datetime | None, Query(description="The table as it was at this time (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_ROWS)] = 1_000,
    fmt: FormatParam = None,
) -> Response:
    if version is not None and as_of is not None:
        raise invalid("as_of", "give either version or as_of, not both")
    days = [(window.first + timedelta(days=i)).isoformat() for i in range((window.last - window.first).days + 1)]
    try:
        table = await asyncio.to_thread(read_outliers, _uri(request), version=version, as_of=as_of, event_dates=days)
    except OSError as exc:
        raise unavailable("lake unavailable") from exc
    except Exception as exc:  # delta-rs: a version or time the table does not have
        if "version" in str(exc).lower() or "timestamp" in str(exc).lower() or "datetime" in str(exc).lower():
            raise invalid("version" if version is not None else "as_of", "the table has no such version") from None
        raise
    if transaction_id is not None:
        table = table.filter(pc.equal(table["transaction_id"], transaction_id))
    if method is not None:
        table = table.filter(pc.equal(table["method"], method))
    table = table.slice(0, limit)
    note(request, rows=table.num_rows, version=version, as_of=as_of.isoformat() if as_of else None)
    if wants_csv(request, fmt):
        sink = io.BytesIO()
        pa_csv.write_csv(table, sink)
        return Response(sink.getvalue(), media_type=CSV,
                        headers={"Content-Disposition": 'attachment; filename="outliers-history.csv"'})
    return Response(_rows.dump_json(table.to_pylist()), media_type="application/json")


@router.get("/history/versions", response_model=list[TableVersion], responses=responses(),
            summary="Commits of the outlier history, newest first")
async def versions(request: Request, principal: Reader,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    try:
        commits = await asyncio.to_thread(delta_history, _uri(request), limit)
    except OSError as exc:
        raise unavailable("lake unavailable") from exc
    return Response(_versions.dump_json(commits), media_type="application/json")
