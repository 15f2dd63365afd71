"""Steps of `transactions_etl` that run in the Airflow worker: run date, warehouse load, audit."""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from datetime import date, datetime

from airflow.providers.postgres.hooks.postgres import PostgresHook

from fluxo import lakefs
from fluxo.contract import METRIC_GRAINS
from fluxo.lake import Lake
from fluxo.settings import get_settings
from fluxo.warehouse import replace_days

log = logging.getLogger(__name__)
WAREHOUSE_CONN_ID = "fluxo_warehouse"
EXTRACT_TASKS = {"s3": "extract.land_s3_files", "api": "extract.extract_partner_api",
                 "db": "extract.extract_source_db", "kafka": "extract.land_kafka"}
# The Glue stages, each writing its stats to work/stats/ingest_date=D/<stage>.json.
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


def require_source(source: str) -> None:
    """Skip the extraction task of a source that FLUXO_SOURCES leaves out."""
    from airflow.sdk.exceptions import AirflowSkipException

    if source not in get_settings().enabled_sources:
        raise AirflowSkipException(f"source {source!r} is not in FLUXO_SOURCES={get_settings().sources!r}")


def warehouse_connection():
    conn = PostgresHook(postgres_conn_id=WAREHOUSE_CONN_ID).get_conn()
    conn.autocommit = True
    return conn


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


def _stage_stats(lake: Lake, ingest_date: str) -> dict:
    stats = {}
    for stage in GLUE_STAGES:
        found = lakefs.read_json(lake.work("stats", f"ingest_date={ingest_date}", f"{stage}.json"))
        if found:
            stats[stage] = found
    return stats


def _quality_rows(lake: Lake, ingest_date: str) -> list[dict]:
    found = lakefs.read_json(f"{lake.quality(ingest_date)}/validation.json")
    if not found:
        return []
    return found["results"] if isinstance(found, dict) else found


def record_run(
    dag_id: str, run_id: str, ingest_date: str, task_states: dict[str, str], extracted: dict[str, dict | None],
    loaded: dict | None,
) -> dict:
    """Write the run's audit record (state, per-stage counts) and its quality results to the warehouse."""
    lake = Lake(get_settings().lake_root)
    failed = [t for t in STAGES if task_states.get(t) in ("failed", "upstream_failed")]
    state = "failed" if failed else "success"
    stats = _stage_stats(lake, ingest_date)
    standardize, curate = stats.get("standardize", {}), stats.get("curate", {})
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
        "partitions": curate.get("partitions", []),
        "metric_rows_loaded": (loaded or {}).get("metric_rows", 0),
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
