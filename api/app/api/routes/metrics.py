"""Daily transaction metrics from the warehouse (metrics.daily_transactions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from psycopg import sql
from psycopg.rows import dict_row

from app.api.deps import MetricsReader, SessionDep, SettingsDep
from app.core.audit import note
from app.models import DailyMetric
from fluxo.contract import DAILY_METRICS

router = APIRouter(prefix="/metrics", tags=["metrics"])

DAILY_QUERY = sql.SQL(
    "SELECT {columns} FROM metrics.daily_transactions WHERE {day} BETWEEN %s AND %s ORDER BY {day}"
).format(
    columns=sql.SQL(", ").join(sql.Identifier(name) for name in DAILY_METRICS.names),
    day=sql.Identifier(DAILY_METRICS.key[0]),
)


@dataclass(frozen=True)
class DayWindow:
    first: date
    last: date


def day_window(
    request: Request,
    settings: SettingsDep,
    first: Annotated[date, Query(alias="from", description="First day, YYYY-MM-DD (included)")],
    last: Annotated[date, Query(alias="to", description="Last day, YYYY-MM-DD (included)")],
) -> DayWindow:
    if first > last:
        problem, message = "to", f"'to' ({last}) must not be before 'from' ({first})"
    elif (last - first).days + 1 > settings.max_range_days:
        problem, message = "to", f"the range may span at most {settings.max_range_days} days, both ends included"
    else:
        return DayWindow(first, last)
    note(request, reason=message)
    raise RequestValidationError(
        [{"type": "value_error", "loc": ("query", problem), "msg": message, "input": request.query_params.get(problem)}]
    )


@router.get("/daily", response_model=list[DailyMetric], summary="Daily transaction metrics, ordered by day")
def daily_metrics(
    request: Request,
    # Declared first: an unauthenticated caller learns nothing, not even whether its query is valid.
    principal: MetricsReader,
    window: Annotated[DayWindow, Depends(day_window)],
    session: SessionDep,
) -> list[dict[str, Any]]:
    with session.cursor(row_factory=dict_row) as cursor:
        cursor.execute(DAILY_QUERY, (window.first, window.last))
        rows = cursor.fetchall()
    note(request, rows=len(rows))
    return rows
