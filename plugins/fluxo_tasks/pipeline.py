"""Steps of `transactions_etl` that run in the Airflow worker: run date, warehouse load, audit."""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from datetime import date, datetime

from fluxo_platform import lakefs
import fluxo_extract
from fluxo.contract import METRIC_GRAINS
from fluxo.sources import REGISTRY
from fluxo.lake import Lake
from fluxo_platform.settings import get_settings
from fluxo_platform.warehouse import replace_days, warehouse_connection

log = logging.getLogger(__name__)
EXTRACT_TASKS = {name: source.extract_task_id for name, source in REGISTRY.items()}
# The Glue stages; each one's XCom carries its results document (`stats`).
GLUE_STAGES = ("standardize", "quality_gate", "curate", "aggregate", "outliers")
STAGES = (*EXTRACT_TASKS.values(), *GLUE_STAGES, "load_warehouse", "load_outlier_summary")


def resolve_ingest_date(params: dict, logical_date: datetime | None, run_after: datetime | None) -> str:
    """The day a run processes: the `run_date` param, else the logical date, else when it was triggered."""
    chosen = params.get("run_date") or ""
    if chosen:
        return date.fromisoformat(str(chosen)).isoformat()
    moment = logical_date or run_after
    if moment is None:
        raise ValueError("the run has neither a run_date param nor a logical date")
    return moment.date().isoformat()


def extract(source: str, ingest_date: str) -> dict:
    """Run the source's extractor (named after its extract task); a source FLUXO_SOURCES leaves out is skipped."""
    from airflow.sdk.exceptions import AirflowSkipException

    if source not in get_settings().enabled_sources:
        raise AirflowSkipException(f"source {source!r} is not in FLUXO_SOURCES={get_settings().sources!r}")
    return getattr(fluxo_extract, REGISTRY[source].extract_task)(ingest_date)


def load_metrics(ingest_date: str, run_id: str, conn=None) -> dict:
    """COPY every metric grain of the day (work/metrics/<grain>/) into its warehouse table.

    One transaction for all grains: for each grain, `replace_days` swaps the day
    partitions of the event dates it carries for freshly COPYed ones. A rerun therefore
    replaces whole days (groups that vanished go too) and never duplicates; readers see
    all grains old or all new.
    """
    lake = Lake(get_settings().lake_root)
    tables = {}
    for grain, (contract, _table) in METRIC_GRAINS.items():
        found = lakefs.read_parquet(lake.metrics(grain, ingest_date))
        if found is not None and found.num_rows:
            tables[grain] = found.select(contract.names)
    if not tables:
        log.warning("no metrics for ingest date %s: nothing to load", ingest_date)
        return {"metric_rows": 0, "replaced": 0, "grains": {}}
    grains, replaced = {}, {}
    with (warehouse_connection() if conn is None else nullcontext(conn)) as conn, conn.transaction():
        for grain, rows in tables.items():
            _contract, table = METRIC_GRAINS[grain]
            result = replace_days(conn, "metrics", table, rows, "event_date", {"run_id": run_id})
            grains[grain], replaced[grain] = result["copied"], result["replaced"]
    log.info("loaded metrics for %s: %s (replaced %s)", ingest_date, json.dumps(grains), json.dumps(replaced))
    return {"metric_rows": grains.get("daily", 0), "replaced": replaced.get("daily", 0), "grains": grains}


def _quality_rows(lake: Lake, ingest_date: str) -> list[dict]:
    found = lakefs.read_json(f"{lake.quality(ingest_date)}/validation.json")
    if not found:
        return []
    return found["results"] if isinstance(found, dict) else found


def record_run(context, ingest_date: str) -> dict:
    """The run's audit record from the task states and results (XComs) of the run, see `write_run_record`."""
    ti, run_id = context["ti"], context["run_id"]
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id]).get(run_id, {})
    results = {task_id: ti.xcom_pull(task_ids=task_id) for task_id in (*EXTRACT_TASKS.values(), *GLUE_STAGES, "load_warehouse")}
    return write_run_record(ti.dag_id, run_id, ingest_date, states, results)


def write_run_record(
    dag_id: str, run_id: str, ingest_date: str, task_states: dict[str, str], results: dict[str, dict | None]
) -> dict:
    """Write the run's audit record (state, per-stage counts) and its quality results to the warehouse.

    `results` holds each task's XCom: an extractor's counts, a Glue stage's `{"stats": ...}`
    (the stage's own results document), the warehouse load's counts.
    """
    lake = Lake(get_settings().lake_root)
    failed = [t for t in STAGES if task_states.get(t) in ("failed", "upstream_failed")]
    state = "failed" if failed else "success"
    stats = {stage: (results.get(stage) or {}).get("stats") for stage in GLUE_STAGES}
    stats = {stage: found for stage, found in stats.items() if found}
    standardize, curate = stats.get("standardize", {}), stats.get("curate", {})
    extracted = {source: results.get(task_id) for source, task_id in EXTRACT_TASKS.items()}
    extracted = {source: got for source, got in extracted.items() if got}
    counts = {
        "extracted": extracted,
        "landed_records": sum(got.get("landed", 0) for got in extracted.values()),
        "extract_quarantined": sum(got.get("quarantined", 0) for got in extracted.values()),
        "read": standardize.get("read", 0),
        "quarantined": standardize.get("quarantined", 0),
        "quarantine_by_reason": standardize.get("quarantine_by_reason", {}),
        "duplicates_dropped": standardize.get("duplicates_dropped", 0) + curate.get("duplicates_dropped", 0),
        "staged": standardize.get("staged", 0),
        "curated_new": curate.get("new_rows", 0),
        "dates": curate.get("dates", []),
        "metric_rows_loaded": (results.get("load_warehouse") or {}).get("metric_rows", 0),
        "quality": {k: v for k, v in stats.get("quality_gate", {}).items() if k != "stage"},
        "stage_stats": stats,
    }
    message = f"failed at {', '.join(failed)}" if failed else None
    quality = _quality_rows(lake, ingest_date)
    with warehouse_connection() as conn, conn.transaction():
        conn.execute(
            """
            INSERT INTO audit.pipeline_runs (run_id, dag_id, ingest_date, state, counts, message, finished_at)
            VALUES (%s, %s, %s, %s, %s::jsonb, %s, now())
            ON CONFLICT (run_id) DO UPDATE SET state = EXCLUDED.state, counts = EXCLUDED.counts,
                message = EXCLUDED.message, finished_at = EXCLUDED.finished_at
            """,
            (run_id, dag_id, ingest_date, state, json.dumps(counts), message),
        )
        conn.execute("DELETE FROM quality.expectation_results WHERE run_id = %s", (run_id,))
        for r in quality:
            conn.execute(
                """
                INSERT INTO quality.expectation_results (run_id, ingest_date, suite, expectation, column_name,
                    severity, success, unexpected_count, element_count)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
                """,
                (run_id, ingest_date, r.get("suite"), r.get("expectation_type") or r.get("expectation"),
                 r.get("column") or "", r.get("severity", "warning"), bool(r.get("success")),
                 r.get("unexpected_count"), r.get("element_count")),
            )
    log.info("run %s for %s: %s %s", run_id, ingest_date, state, json.dumps(counts))
    return {"state": state, **counts}
