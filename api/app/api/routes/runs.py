"""Pipeline runs (audit.pipeline_runs; scope runs:read), with their per-stage counts.

Rows are served whole (`to_jsonb`), so columns added to the table appear without a change here.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from app.api.deps import reader
from app.api.lists import add_list_route
from app.core import db
from app.core.audit import note
from app.core.errors import ApiError, responses
from app.resources import RUNS

router = APIRouter()
add_list_route(router, RUNS)

RunsReader = reader(RUNS.scope)


@router.get("/runs/{run_id}", summary="One pipeline run", tags=["runs"], response_model=dict[str, Any],
            responses=responses(404))
async def run(
    request: Request, principal: RunsReader,
    run_id: Annotated[str, Path(max_length=250, pattern=r"^[^\x00-\x1f]+$", description="Airflow run id")],
) -> Response:
    async with db.connection(request.app.state.pool) as conn:
        row = await (await conn.execute(
            "SELECT to_jsonb(r)::text FROM audit.pipeline_runs AS r WHERE run_id = %s", (run_id,))).fetchone()
    if row is None:
        raise ApiError(404, f"no pipeline run {run_id!r}", "not_found")
    note(request, rows=1)
    return Response(row[0], media_type="application/json")
