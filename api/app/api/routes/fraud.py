"""Fraud alerts from the warehouse (metrics.fraud_alerts; scope fraud:read): the list over a day
window, filtered by rule and minimum score and paged like the metric routes, and one alert with
its evidence."""

import json
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from psycopg import sql
from pydantic import TypeAdapter

from app.api.deps import reader
from app.api.lists import add_list_route
from app.core import db
from app.core.audit import note
from app.core.entities import json_object
from app.core.errors import ApiError, responses
from app.models import FraudAlertDetail
from app.resources import FRAUD_ALERTS
from fluxo.fraud_rules import RULES


router = APIRouter()
add_list_route(router, FRAUD_ALERTS)

FraudReader = reader(FRAUD_ALERTS.scope)
_detail = TypeAdapter(FraudAlertDetail)


@router.get("/fraud/alerts/{transaction_id}", summary="One fraud alert with the evidence of every rule that fired",
            tags=["fraud"], response_model=FraudAlertDetail, responses=responses(404))
async def alert(
    request: Request, principal: FraudReader,
    transaction_id: Annotated[str, Path(max_length=128, pattern=r"^[^\x00-\x1f]+$", description="Transaction id")],
) -> Response:
    query = sql.SQL("SELECT {} FROM {} AS r WHERE r.transaction_id = %s ORDER BY r.event_date DESC LIMIT 1").format(
        json_object(FRAUD_ALERTS), sql.Identifier(*FRAUD_ALERTS.table))
    async with db.connection(request.app.state.pool) as conn:
        row = await (await conn.execute(query, (transaction_id,))).fetchone()
    if row is None:
        raise ApiError(404, f"no fraud alert for transaction {transaction_id!r}", "not_found")
    values = json.loads(row[0])
    values["evidence"] = [{"rule": name, "feature": RULES[name].column, "value": values.get(RULES[name].column)}
                          for name in values["rules"].split(",") if name in RULES]
    note(request, rows=1)
    return Response(_detail.dump_json(_detail.validate_python(values)), media_type="application/json")
