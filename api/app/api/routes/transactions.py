"""One curated transaction by id, the card masked (scope transactions:read)."""

import asyncio
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import TypeAdapter

from app.api.deps import reader
from app.core.audit import note
from app.core.curated import find_transaction
from app.core.db import unavailable
from app.core.errors import ApiError, responses
from app.models import Transaction, mask_card

router = APIRouter(tags=["transactions"])
_as_json = TypeAdapter(Transaction)
Reader = reader("transactions:read")


@router.get("/transactions/{transaction_id}", response_model=Transaction, responses=responses(404),
            summary="One curated transaction (card masked)")
async def transaction(
    request: Request,
    principal: Reader,
    transaction_id: Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f/]+$")],
    day: Annotated[date | None, Query(alias="date", description="Its event day, if known: reads one partition")] = None,
) -> Response:
    root = request.app.state.settings.resolved_lake_root
    try:
        row = await asyncio.to_thread(find_transaction, root, transaction_id, day)
    except OSError as exc:
        raise unavailable("lake unavailable") from exc
    if row is None:
        raise ApiError(404, "no curated transaction with that id" + (f" on {day}" if day else ""), "not_found")
    row["card_masked"] = mask_card(row.pop("card_last4", None))
    row.pop("card_token", None)
    note(request, rows=1)
    return Response(_as_json.dump_json(Transaction(**row)), media_type="application/json")
