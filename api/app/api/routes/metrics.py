"""Transaction metrics from the warehouse: the daily totals and the finer grains of METRIC_GRAINS."""

from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from psycopg import sql
from psycopg.rows import dict_row

from app.api.deps import MetricsReader, SessionDep, SettingsDep
from app.core.audit import note
from app.models import GRAIN_MODELS, DailyMetric, OutlierSummaryRow
from fluxo.contract import CHANNELS, DAILY_METRICS, METRIC_GRAINS, OUTLIER_METHODS, OUTLIER_SUMMARY, Contract

router = APIRouter(prefix="/metrics", tags=["metrics"])

MAX_PAGE = 10_000


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


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


def page(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Rows per page")] = 1_000,
    offset: Annotated[int, Query(ge=0, description="Rows to skip (see the Link header)")] = 0,
) -> Page:
    return Page(limit, offset)


WindowDep = Annotated[DayWindow, Depends(day_window)]
PageDep = Annotated[Page, Depends(page)]


def read_days(session, contract: Contract, table: str, window: DayWindow, filters: dict[str, Any],
              page: Page | None = None) -> list[dict[str, Any]]:
    """Rows of `metrics.<table>` in the day window, equal to every non-null filter, in key order."""
    where = [sql.SQL("event_date BETWEEN %s AND %s")]
    params: list[Any] = [window.first, window.last]
    for column, value in filters.items():
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(
        sql.SQL(", ").join(sql.Identifier(n) for n in contract.names),
        sql.Identifier("metrics", table),
        sql.SQL(" AND ").join(where),
        sql.SQL(", ").join(sql.Identifier(k) for k in contract.key),
    )
    if page is not None:
        query += sql.SQL(" LIMIT %s OFFSET %s")
        params += [page.limit, page.offset]
    with session.cursor(row_factory=dict_row) as cursor:
        cursor.execute(query, params)
        return cursor.fetchall()


def paged(request: Request, response: Response, rows: list[dict[str, Any]], page: Page) -> list[dict[str, Any]]:
    """A full page may have a next one: say where, as an RFC 8288 Link header."""
    if len(rows) == page.limit:
        following = request.url.include_query_params(offset=page.offset + page.limit, limit=page.limit)
        response.headers["Link"] = f'<{following}>; rel="next"'
    note(request, rows=len(rows))
    return rows


@router.get("/daily", response_model=list[DailyMetric], summary="Daily transaction metrics, ordered by day")
def daily_metrics(
    request: Request,
    # Declared first: an unauthenticated caller learns nothing, not even whether its query is valid.
    principal: MetricsReader,
    window: WindowDep,
    session: SessionDep,
) -> list[dict[str, Any]]:
    rows = read_days(session, DAILY_METRICS, "daily_transactions", window, {})
    note(request, rows=len(rows))
    return rows


# Each paged resource: its filters (query parameters -> column values), then one route each.

def merchant_filters(merchant_id: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
    return {"merchant_id": merchant_id}


def mcc_filters(mcc: Annotated[str | None, Query(pattern=r"^[0-9]{4}$")] = None) -> dict[str, Any]:
    return {"mcc": mcc}


def country_channel_filters(
    country: Annotated[str | None, Query(pattern=r"^[A-Z]{2}$")] = None, channel: Literal[CHANNELS] | None = None,
) -> dict[str, Any]:
    return {"country": country, "channel": channel}


def no_filters() -> dict[str, Any]:
    return {}


def outlier_filters(
    method: Literal[OUTLIER_METHODS] | None = None, mcc: Annotated[str | None, Query(pattern=r"^[0-9]{4}$")] = None,
) -> dict[str, Any]:
    return {"method": method, "mcc": mcc}


PAGED_RESOURCES = (
    # path, (contract, table), filters, response row model, summary
    ("/merchants", METRIC_GRAINS["merchant_daily"], merchant_filters, GRAIN_MODELS["merchant_daily"],
     "Metrics per day and merchant, ordered by day and merchant"),
    ("/mcc", METRIC_GRAINS["mcc_daily"], mcc_filters, GRAIN_MODELS["mcc_daily"],
     "Metrics per day and merchant category code, ordered by day and MCC"),
    ("/country-channel", METRIC_GRAINS["country_channel_daily"], country_channel_filters,
     GRAIN_MODELS["country_channel_daily"], "Metrics per day, merchant country and channel"),
    ("/hourly", METRIC_GRAINS["hourly"], no_filters, GRAIN_MODELS["hourly"], "Metrics per UTC hour, ordered by hour"),
    ("/outliers", (OUTLIER_SUMMARY, "outlier_summary"), outlier_filters, OutlierSummaryRow,
     "Outliers per day, detector and merchant category code"),
)


def paged_endpoint(contract: Contract, table: str, filters):
    def endpoint(
        request: Request, response: Response, principal: MetricsReader, window: WindowDep, page: PageDep,
        session: SessionDep, where: Annotated[dict[str, Any], Depends(filters)],
    ) -> list[dict[str, Any]]:
        return paged(request, response, read_days(session, contract, table, window, where, page), page)

    return endpoint


for path, (contract, table), filters, model, summary in PAGED_RESOURCES:
    router.add_api_route(path, paged_endpoint(contract, table, filters), methods=["GET"],
                         response_model=list[model], summary=f"{summary} (paged)", name=f"{table} metrics")
