"""OData v4 feed of the entity sets with a contract (Power BI: Get Data -> OData feed).

`/odata/` service document, `/odata/$metadata` (CSDL), `/odata/<Set>` with `$select`,
`$filter` (eq ne gt ge lt le and, on key columns), `$orderby`, `$top`, `$skip`, `$count`,
and server-driven paging: a page holds at most `Prefer: odata.maxpagesize` rows (default
and cap 10,000); `@odata.nextLink` carries a `$skiptoken` (a keyset position in key order,
else an offset). Authentication: a bearer token, or HTTP Basic with the client id and secret
(what Power BI's "Basic" credential sends); the set's scope applies.
"""

from __future__ import annotations

import json
import re
import uuid
from contextlib import AsyncExitStack
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from psycopg import sql

from app.api.deps import get_feed_principal
from app.api.lists import MAX_OFFSET, MAX_PAGE, public_url
from app.core import db
from app.core.audit import note
from app.core.entities import EntitySet, Query as RowQuery, decode_cursor, encode_cursor, json_object
from app.core.errors import ApiError, invalid, responses
from app.core.odata import parse_filter, parse_orderby, parse_select
from app.core.security import Principal
from app.resources import ODATA_SETS

router = APIRouter(prefix="/odata", tags=["odata"])
SetName = Literal[tuple(ODATA_SETS)]
ODATA_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;charset=utf-8"
HEADERS = {"OData-Version": "4.0"}
STREAM_ROWS = 2_000
_MAXPAGESIZE = re.compile(r"odata\.maxpagesize\s*=\s*(\d{1,6})")


def _base(request: Request) -> str:
    return (request.app.state.settings.public_base_url or "") + "/odata"


@router.get("/", summary="OData service document")
async def service_document(request: Request) -> Response:
    body = {"@odata.context": f"{_base(request)}/$metadata",
            "value": [{"name": name, "kind": "EntitySet", "url": name} for name in ODATA_SETS]}
    return Response(json.dumps(body), media_type=ODATA_JSON, headers=HEADERS)


@router.get("/$metadata", summary="OData CSDL metadata (XML)",
            responses={200: {"content": {"application/xml": {"schema": {"type": "string"}}}}})
async def metadata(request: Request) -> Response:
    return Response(request.app.state.odata_metadata, media_type="application/xml", headers=HEADERS)


def _allowed(request: Request, principal: Principal, entity: EntitySet) -> None:
    if entity.scope not in principal.scopes:
        note(request, reason=f"token lacks scope {entity.scope}")
        raise ApiError(403, f"token lacks scope {entity.scope}", "insufficient_scope",
                       headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{entity.scope}"'})


FeedPrincipal = Annotated[Principal, Depends(get_feed_principal)]
FilterParam = Annotated[str | None, Query(alias="$filter", max_length=2048,
                                          description="eq ne gt ge lt le and, on key columns")]


def _rows(entity: EntitySet, filter_: str | None) -> RowQuery:
    rows = RowQuery(entity)
    if filter_:
        condition, params = parse_filter(entity, filter_)
        rows.where.append(condition)
        rows.params += params
    return rows


def _skiptoken(entity: EntitySet, token: str | None) -> tuple[list[Any] | None, int]:
    if not token:
        return None, 0
    kind, rest = token[:1], token[1:]
    if kind == "k":
        return decode_cursor(entity, rest, "$skiptoken"), 0
    if kind == "o" and rest.isdigit() and int(rest) <= MAX_OFFSET:
        return None, int(rest)
    raise invalid("$skiptoken", "is not a token this service wrote (follow @odata.nextLink)")


@router.get("/{entity_set}/$count", summary="Number of rows of an entity set (text)", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **responses()})
async def count(request: Request, entity_set: Annotated[SetName, Path()], principal: FeedPrincipal,
                filter_: FilterParam = None) -> Response:
    entity = ODATA_SETS[entity_set]
    _allowed(request, principal, entity)
    rows = _rows(entity, filter_)
    async with db.connection(request.app.state.pool) as conn:
        total = (await (await conn.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {}").format(rows.source(), rows.condition()), rows.params
        )).fetchone())[0]
    return Response(str(total), media_type="text/plain", headers=HEADERS)


@router.get("/{entity_set}", summary="Rows of an entity set (OData v4 JSON, server-driven paging)",
            responses=responses())
async def entity_rows(
    request: Request,
    entity_set: Annotated[SetName, Path()],
    principal: FeedPrincipal,
    filter_: FilterParam = None,
    select: Annotated[str | None, Query(alias="$select", max_length=2048, pattern=r"^[A-Za-z0-9_, *]*$")] = None,
    orderby: Annotated[str | None, Query(alias="$orderby", max_length=2048, pattern=r"^[A-Za-z0-9_, ]*$")] = None,
    top: Annotated[int | None, Query(alias="$top", ge=0, le=2**31 - 1)] = None,
    skip: Annotated[int, Query(alias="$skip", ge=0, le=MAX_OFFSET)] = 0,
    count: Annotated[bool, Query(alias="$count")] = False,
    skiptoken: Annotated[str | None, Query(alias="$skiptoken", max_length=2048, pattern=r"^[A-Za-z0-9_-]*$")] = None,
) -> Response:
    entity = ODATA_SETS[entity_set]
    _allowed(request, principal, entity)
    columns = parse_select(entity, select)
    order, key_order = parse_orderby(entity, orderby)
    prefer = _MAXPAGESIZE.search(request.headers.get("prefer", ""))
    page_size = min(MAX_PAGE, max(1, int(prefer.group(1)))) if prefer else MAX_PAGE
    ieee754 = "ieee754compatible=true" in request.headers.get("accept", "").replace(" ", "").lower()
    after, offset = _skiptoken(entity, skiptoken)
    if not skiptoken:
        offset = skip
    limit = page_size if top is None else min(page_size, top)

    rows = _rows(entity, filter_)
    ordering = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier("r", c), sql.SQL(d)) for c, d in order)
    statement, params = rows.after(after).select(
        json_object(entity, columns, ("decimal", "long") if ieee754 else ()), order=ordering, limit=limit, offset=offset)
    # The page streams from a server-side cursor: the first rows leave before the last are read.
    resources = AsyncExitStack()
    try:
        conn = await resources.enter_async_context(db.connection(request.app.state.pool))
        total = None
        if count:
            total = (await (await conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE {}").format(rows.source(), rows.condition()), rows.params
            )).fetchone())[0]
        await resources.enter_async_context(conn.transaction())
        cursor = await resources.enter_async_context(conn.cursor(name=f"odata_{uuid.uuid4().hex}"))
        await cursor.execute(statement, params)
        first = await cursor.fetchmany(STREAM_ROWS)
    except BaseException:
        await resources.aclose()
        raise

    head = [f'"@odata.context":{json.dumps(f"{_base(request)}/$metadata#{entity_set}")}']
    if total is not None:
        head.append(f'"@odata.count":{total}')

    async def body():
        try:
            yield ("{" + ",".join(head) + ',"value":[').encode()
            chunk, sent, last = first, 0, None
            while chunk:
                yield (("," if sent else "") + ",".join(r[0] for r in chunk)).encode()
                sent, last = sent + len(chunk), chunk[-1]
                chunk = await cursor.fetchmany(STREAM_ROWS) if len(chunk) == STREAM_ROWS else []
            tail = "]"
            remaining = None if top is None else top - sent
            if sent == limit and limit > 0 and (remaining is None or remaining > 0):
                query = {k: v for k, v in request.query_params.items() if k not in ("$skip", "$skiptoken", "$top")}
                if remaining is not None:
                    query["$top"] = remaining
                query["$skiptoken"] = ("k" + encode_cursor(last[1:])) if key_order else f"o{offset + sent}"
                tail += f',"@odata.nextLink":{json.dumps(public_url(request, request.url.path, query))}'
            note(request, rows=sent)
            yield (tail + "}").encode()
        finally:
            await resources.aclose()

    headers = dict(HEADERS)
    if prefer:
        headers["Preference-Applied"] = f"odata.maxpagesize={page_size}"
    content_type = ODATA_JSON.replace(";charset", f";IEEE754Compatible={'true' if ieee754 else 'false'};charset")
    return StreamingResponse(body(), media_type=content_type, headers=headers)
