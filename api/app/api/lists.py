"""The REST list route of an entity set: day window, filters, keyset paging, JSON or CSV.

Paged lists take `limit` (1-10,000) and either `cursor` (keyset, from the `Link` header) or
`offset` (0-1,000,000); a full page carries `Link: <…>; rel="next"` whose URL starts with
FLUXO_API_PUBLIC_BASE_URL (relative when unset), never with the request's Host.
`?format=csv` or `Accept: text/csv` answers the same rows as CSV with a header line.
"""


import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from app.api.deps import SettingsDep, reader
from app.core import db
from app.core.audit import note
from app.core.entities import EntitySet, Query as RowQuery, decode_cursor, encode_cursor, json_object
from app.core.errors import RANGE_RULES, invalid, responses

MAX_PAGE = 10_000
MAX_OFFSET = 1_000_000
JSON = "application/json"
CSV = "text/csv; charset=utf-8"


@dataclass(frozen=True)
class DayWindow:
    first: date
    last: date


async def day_window(
    request: Request,
    settings: SettingsDep,
    first: Annotated[date, Query(alias="from", description=f"First day, YYYY-MM-DD (included). {RANGE_RULES}")],
    last: Annotated[date, Query(alias="to", description="Last day, YYYY-MM-DD (included)")],
) -> DayWindow:
    if first > last:
        raise invalid("to", f"'to' ({last}) must not be before 'from' ({first})")
    if (last - first).days + 1 > settings.max_range_days:
        raise invalid("to", f"the range may span at most {settings.max_range_days} days, both ends included")
    return DayWindow(first, last)


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int
    cursor: str | None


async def page(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Rows per page")] = 1_000,
    cursor: Annotated[str | None, Query(max_length=2048, pattern=r"^[A-Za-z0-9_-]*$",
                                        description="Where the next page starts (from the Link header)")] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip (prefer `cursor`)")] = 0,
) -> Page:
    return Page(limit, offset, cursor)


WindowDep = Annotated[DayWindow, Depends(day_window)]
PageDep = Annotated[Page, Depends(page)]
FormatParam = Annotated[Literal["json", "csv"] | None,
                        Query(alias="format", description="csv for CSV (same as Accept: text/csv)")]


async def no_filters() -> dict[str, Any]:
    return {}


def public_url(request: Request, path: str, params: dict[str, Any]) -> str:
    """A link for the caller: the configured public base, never the Host header."""
    base = request.app.state.settings.public_base_url or ""
    return f"{base}{path}?{urlencode({k: v for k, v in params.items() if v is not None})}"


def wants_csv(request: Request, fmt: str | None) -> bool:
    if fmt:
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


@dataclass(frozen=True)
class Cached:
    expires: float
    body: bytes
    headers: dict[str, str]
    scope: str
    rows: int


class ResultCache:
    """JSON answers of the last `ttl` seconds by path and query, per worker
    (FLUXO_API_CACHE_TTL_SECONDS; 0 turns it off). A hit is still authenticated, authorized and
    audited: `CachedReads` serves it in front of the router, with the same checks."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._items: OrderedDict[tuple[str, bytes], Cached] = OrderedDict()
        self.inflight: dict[tuple[str, bytes], asyncio.Future] = {}

    def get(self, key: tuple[str, bytes]) -> Cached | None:
        """The fresh answer; or, while one request reads the new one, the answer that expired
        less than `ttl` ago (so a cache expiry never makes every waiting client queue)."""
        hit = self._items.get(key)
        if hit is None:
            return None
        now = time.monotonic()
        if hit.expires >= now or (key in self.inflight and hit.expires + self.ttl >= now):
            return hit
        return None

    def put(self, key: tuple[str, bytes], body: bytes, headers: dict[str, str], scope: str, rows: int) -> None:
        if self.ttl <= 0:
            return
        self._items[key] = Cached(time.monotonic() + self.ttl, body, headers, scope, rows)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)


async def read_page(request: Request, entity: EntitySet, rows: RowQuery,
                    page: Page | None) -> tuple[bytes, dict[str, str], int]:
    """JSON array of the rows (and the Link header of the next page when this one is full)."""
    after = decode_cursor(entity, page.cursor) if page else None
    statement, params = rows.after(after).select(
        json_object(entity), limit=page.limit if page else None,
        offset=page.offset if page and not after else 0)
    async with db.connection(request.app.state.pool) as conn:
        cursor = await conn.execute(statement, params)
        found = await cursor.fetchall()
    body = b"[" + ",".join(r[0] for r in found).encode() + b"]"
    headers = {}
    if page and len(found) == page.limit:
        query = dict(request.query_params)
        query.pop("offset", None)
        query["cursor"] = encode_cursor(found[-1][1:])
        headers["Link"] = f'<{public_url(request, request.url.path, query)}>; rel="next"'
    note(request, rows=len(found))
    return body, headers, len(found)


async def read_csv(request: Request, entity: EntitySet, rows: RowQuery, page: Page | None) -> bytes:
    after = decode_cursor(entity, page.cursor) if page else None
    statement = rows.after(after).csv(limit=page.limit if page else None,
                                      offset=page.offset if page and not after else 0)
    chunks = []
    async with db.connection(request.app.state.pool) as conn:
        async with conn.cursor() as cursor:
            async with cursor.copy(statement, rows.params) as copy:
                async for chunk in copy:
                    chunks.append(bytes(chunk))
    body = b"".join(chunks)
    note(request, rows=max(0, body.count(b"\n") - 1), format="csv")
    return body


def list_endpoint(entity: EntitySet):
    Reader = reader(entity.scope)
    Filters = Annotated[dict[str, Any], Depends(entity.filters or no_filters)]

    async def answer(request: Request, window: DayWindow, where: dict[str, Any], page: Page | None,
                     fmt: str | None) -> Response:
        if wants_csv(request, fmt):
            rows = RowQuery(entity).window(window.first, window.last).equal(where)
            body = await read_csv(request, entity, rows, page)
            filename = entity.path.strip("/").replace("/", "-")
            return Response(body, media_type=CSV,
                            headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'})
        cache: ResultCache = request.app.state.cache
        key = (request.url.path, request.scope.get("query_string", b"")) if entity.cache else None
        hit = cache.get(key) if key else None
        if hit:
            note(request, cache="hit", rows=hit.rows)
            return Response(hit.body, media_type=JSON, headers=hit.headers)
        rows = RowQuery(entity).window(window.first, window.last).equal(where)
        if key is None or cache.ttl <= 0:
            body, headers, count = await read_page(request, entity, rows, page)
            return Response(body, media_type=JSON, headers=headers)
        # Single flight: concurrent misses of one query share one warehouse read.
        running = cache.inflight.get(key)
        if running is None:
            running = cache.inflight[key] = asyncio.ensure_future(read_page(request, entity, rows, page))
            running.add_done_callback(lambda _: cache.inflight.pop(key, None))
        body, headers, count = await asyncio.shield(running)
        note(request, rows=count)
        cache.put(key, body, headers, entity.scope, count)
        return Response(body, media_type=JSON, headers=headers)

    if entity.paged:
        async def endpoint(request: Request, principal: Reader, window: WindowDep, where: Filters, page: PageDep,
                           fmt: FormatParam = None) -> Response:
            return await answer(request, window, where, page, fmt)
    else:
        async def endpoint(request: Request, principal: Reader, window: WindowDep, where: Filters,
                           fmt: FormatParam = None) -> Response:
            return await answer(request, window, where, None, fmt)
    return endpoint


def add_list_route(router: APIRouter, entity: EntitySet) -> None:
    model = entity.response_model
    ok: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                                                 "description": "The rows (JSON, or CSV with ?format=csv)"}}
    if entity.paged:
        ok[200]["headers"] = {"Link": {"description": "Next page: `<url>; rel=\"next\"` when this page is full",
                                       "schema": {"type": "string"}}}
    router.add_api_route(
        entity.path, list_endpoint(entity), methods=["GET"], response_model=list[model] if model else list[dict],
        summary=entity.summary + (" (paged)" if entity.paged else ""), name=entity.name, tags=[entity.tag],
        responses={**ok, **responses()},
    )


class CachedReads:
    """ASGI middleware: a JSON list answer still in the ResultCache is served without routing,
    after the same bearer-token, client and scope checks as the route. Anything else (no hit,
    CSV, no token, a refusal of any kind) goes to the router, which answers it in full."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            state = scope["app"].state
            hit = state.cache.get((scope["path"], scope.get("query_string", b"")))
            if hit is not None and await self._allowed(scope, state, hit.scope):
                scope["state"]["audit_detail"] = {"cache": "hit", "rows": hit.rows}
                headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(hit.body)).encode())]
                headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in hit.headers.items()]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": hit.body})
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _allowed(scope, state, needed: str) -> bool:
        from app.api.deps import bearer_principal, principal_name

        authorization, accept = None, b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value
            elif name == b"accept":
                accept = value
        if b"text/csv" in accept or not authorization or authorization[:7].lower() != b"bearer ":
            return False
        try:
            principal = await bearer_principal(state, authorization[7:].strip().decode("latin-1"))
        except Exception:
            return False  # the router refuses it properly
        if needed not in principal.scopes:
            return False
        scope["state"]["principal"] = principal_name(state, principal)
        return True
