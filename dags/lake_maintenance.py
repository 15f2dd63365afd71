"""Weekly lake maintenance: compact every Delta table of the lake and vacuum files past the retention."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag
from fluxo_glue import FluxoGlueJobOperator


@dag(
    dag_id="lake_maintenance",
    schedule="@weekly",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    params={"retention_hours": Param(168, type="integer", minimum=0, description="Keep removed files this long")},
    tags=["fluxo", "maintenance"],
    doc_md=__doc__,
)
def lake_maintenance():
    FluxoGlueJobOperator(
        task_id="lake_maintenance",
        script="lake_maintenance",
        script_args={"--ingest_date": "{{ ds }}", "--retention_hours": "{{ params.retention_hours }}"},
    )


lake_maintenance()
