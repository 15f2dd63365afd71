"""The run audit: one `audit.pipeline_runs` row per run attempt, never overwritten.

A row says who or what triggered the run (user, run type, conf), when it started and ended,
each stage's state, rows in/out/quarantined and duration, the quality summary, the fraud
alert count (when the run has a fraud stage), and the first error's own message with the task
that raised it. The API serves these rows (`to_jsonb` of the row, so every column shows).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fluxo.lake import Lake
from fluxo_platform import lakefs
from fluxo_platform.settings import get_settings
from fluxo_platform.warehouse import warehouse_connection
from fluxo_tasks import run as run_plan
from fluxo_tasks.pipeline import EXTRACT_TASKS, FRAUD_ALERTS_KEY, FRAUD_STAGE, GLUE_STAGES, LOAD_TASKS, STAGES

log = logging.getLogger(__name__)
_FAILED = ("failed", "upstream_failed")
_QUALITY_SUMMARY = ("critical_failed", "warnings_failed", "evaluated", "rows")


def run_facts(context, plan: dict | None) -> dict[str, Any]:
    """Who/what/when of the run from its Airflow context (the plan's day, else the day it would have had)."""
    dag_run = context["dag_run"]
    ingest_date = (plan or {}).get("ingest_date")
    if not ingest_date:
        try:
            ingest_date = run_plan.resolve_ingest_date(context["params"], dag_run.logical_date, dag_run.run_after)
        except ValueError:  # a malformed run_date is the error the audit reports; the row keeps the run's day
            ingest_date = run_plan.resolve_ingest_date({}, dag_run.logical_date, dag_run.run_after)
    run_type = str(getattr(dag_run.run_type, "value", dag_run.run_type))
    user = dag_run.triggering_user_name
    return {
        "dag_id": dag_run.dag_id,
        "run_id": dag_run.run_id,
        "attempt": dag_run.clear_number or 0,
        "ingest_date": ingest_date,
        "run_type": run_type,
        "triggered_by": user or {"scheduled": "scheduler", "asset_triggered": "asset event"}.get(run_type, run_type),
        "triggering_user": user,
        "conf": dict(dag_run.conf or {}),
        "logical_date": dag_run.logical_date,
        "started_at": dag_run.start_date,
    }


def record_run(context, plan_task: str = "plan_run") -> dict:
    """The run's audit record from the task states, results (XComs) and remembered errors of the run."""
    ti = context["ti"]
    run = run_facts(context, ti.xcom_pull(task_ids=plan_task))
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run["run_id"]]).get(run["run_id"], {})
    results = {task_id: ti.xcom_pull(task_ids=task_id) for task_id in STAGES}
    errors = [ti.xcom_pull(task_ids=task_id, key=run_plan.ERROR_KEY) for task_id in (plan_task, *STAGES)]
    return write_run_record(run, states, results, run_plan.first_error(errors))


def stage_rows(task_states: dict[str, str], results: dict[str, dict | None]) -> dict[str, dict]:
    """Per stage: state, rows in/out/quarantined (from its results), duration."""
    stages: dict[str, dict] = {}
    for source, task_id in EXTRACT_TASKS.items():
        got = results.get(task_id) or {}
        stages[task_id] = {"source": source, "rows_out": got.get("landed"), "quarantined": got.get("quarantined"),
                           "duration_s": got.get("duration_s")}
    for stage in GLUE_STAGES.values():
        got = results.get(stage.name) or {}
        stats = got.get("stats") or {}
        stages[stage.name] = {
            "rows_in": stats.get(stage.rows_in) if stage.rows_in else None,
            "rows_out": stats.get(stage.rows_out) if stage.rows_out else None,
            "quarantined": stats.get(stage.quarantined) if stage.quarantined else None,
            "duration_s": got.get("duration_s"),
            "mode": got.get("mode"),
            "glue_run_id": got.get("glue_run_id"),
            "skipped": got.get("skipped_reason"),  # inputs unchanged since an earlier run: not run again
        }
    for task_id in LOAD_TASKS:
        got = results.get(task_id) or {}
        stages[task_id] = {"rows_out": next((got[k] for k in ("metric_rows", "summary_rows", "alert_rows") if k in got), None),
                           "duration_s": got.get("duration_s")}
    for task_id, row in stages.items():
        row["state"] = task_states.get(task_id)
    return stages


def _quality_rows(lake: Lake, ingest_date: str) -> list[dict]:
    found = lakefs.read_json(f"{lake.quality(ingest_date)}/validation.json")
    if not found:
        return []
    return found["results"] if isinstance(found, dict) else found


def write_run_record(run: dict, task_states: dict[str, str], results: dict[str, dict | None],
                     error: dict | None = None) -> dict:
    """Insert the run attempt's audit row and its quality results; returns the record (the task's XCom).

    `run`: `run_facts`; `results`: each task's XCom (an extractor's counts, a Glue stage's
    `{"stats": ...}` = the stage's results document, a load's counts); `error`: the first
    error remembered by a failed task (`run.remember_error`).
    """
    lake = Lake(get_settings().lake_root)
    ingest_date, run_id = run["ingest_date"], run["run_id"]
    failed = [t for t in STAGES if task_states.get(t) in _FAILED]
    state = "failed" if failed or error else "success"
    stats = {stage: (results.get(stage) or {}).get("stats") for stage in GLUE_STAGES}
    stats = {stage: found for stage, found in stats.items() if found}
    standardize, curate = stats.get("standardize", {}), stats.get("curate", {})
    extracted = {source: results.get(task_id) for source, task_id in EXTRACT_TASKS.items()}
    extracted = {source: got for source, got in extracted.items() if got}
    quality = {k: v for k, v in stats.get("quality_gate", {}).items() if k in _QUALITY_SUMMARY}
    counts = {
        "extracted": extracted,
        "landed_records": sum(got.get("landed", 0) for got in extracted.values()),
        "extract_quarantined": sum(got.get("quarantined", 0) for got in extracted.values()),
        "read": standardize.get("read", 0),
        "quarantined": standardize.get("quarantined", 0),
        "quarantine_by_reason": standardize.get("quarantine_by_reason", {}),
        # where duplicates went: copies dropped inside the day's batch (standardize), and staged
        # transactions that were already curated (curate kept one copy); the rest is new
        "duplicates_in_batch": standardize.get("duplicates_dropped", 0),
        "staged": standardize.get("staged", 0),
        "already_curated": curate.get("already_curated", 0),
        "curated_new": curate.get("curated_new", 0),
        "curated_version": curate.get("version"),
        "dates": curate.get("dates", []),
        "metric_rows_loaded": (results.get("load_warehouse") or {}).get("metric_rows", 0),
        "quality": quality,
        "stage_stats": stats,
    }
    fraud = stats.get(FRAUD_STAGE, {}).get(FRAUD_ALERTS_KEY)
    error_task = (error or {}).get("task") or (failed[0] if failed else None)
    error_message = (error or {}).get("message") or (f"{failed[0]} {task_states[failed[0]]}" if failed else None)
    record = {
        **{k: run[k] for k in ("dag_id", "run_id", "attempt", "ingest_date", "run_type", "triggered_by",
                               "triggering_user", "conf")},
        "state": state,
        "stages": stage_rows(task_states, results),
        "quality": quality,
        "fraud_alerts": fraud,
        "error_task": error_task,
        "error_message": error_message,
    }
    quality_rows = _quality_rows(lake, ingest_date)
    with warehouse_connection() as conn, conn.transaction():
        conn.execute(
            """
            INSERT INTO audit.pipeline_runs (run_id, dag_id, ingest_date, state, counts, message, started_at,
                finished_at, attempt, run_type, triggered_by, triggering_user, conf, logical_date, stages, quality,
                fraud_alerts, error_task, error_message)
            VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, now(), %s, %s, %s, %s, %s::jsonb, %s, %s::jsonb, %s::jsonb,
                %s, %s, %s)
            """,
            (run_id, run["dag_id"], ingest_date, state, json.dumps(counts),
             f"{error_task}: {error_message}" if error_task else None, run.get("started_at"),
             run["attempt"], run["run_type"], run["triggered_by"], run["triggering_user"],
             json.dumps(run["conf"], default=str), run.get("logical_date"), json.dumps(record["stages"]),
             json.dumps(quality), fraud, error_task, error_message),
        )
        conn.execute("DELETE FROM quality.expectation_results WHERE run_id = %s", (run_id,))
        for r in quality_rows:
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
        run_plan.release_run_slot(conn, run["dag_id"], run_id)
    log.info("run %s (attempt %s) for %s: %s %s", run_id, run["attempt"], ingest_date, state,
             json.dumps(record["stages"]))
    if error_task:
        log.error("first error in %s: %s", error_task, error_message)
    return {**record, **counts}


def raise_if_failed(record: dict | None) -> None:
    """Fail the run with its first error when the audit says it failed (or could not be written)."""
    if record is None:
        raise RuntimeError("the run audit was not written: see the record_audit task's log")
    if record["state"] != "success":
        raise RuntimeError(f"{record['error_task']} failed: {record['error_message']}")
    log.info("every stage of run %s succeeded", record["run_id"])
