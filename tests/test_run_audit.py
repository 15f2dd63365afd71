"""A run's plan, its run slot and its audit record, on the session's warehouse (no Airflow scheduler)."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import psycopg
import pytest

DAG = "audit_test"


def _dag_run(conf=None, logical_date=None, run_type="manual"):
    return SimpleNamespace(conf=conf or {}, logical_date=logical_date, run_type=run_type,
                           run_after=datetime(2026, 11, 20, 3, tzinfo=timezone.utc))


def test_the_plan_takes_the_form_and_refuses_unknown_conf_keys():
    from fluxo_tasks import run

    plan = run.plan({"run_date": None, "sources": ["s3", "kafka"], "full_refresh": False}, _dag_run())
    assert plan == {"ingest_date": "2026-11-20", "sources": ["s3", "kafka"], "full_refresh": False,
                    "run_type": "manual", "kafka_replay": {}}
    assert run.kafka_replay("0:1200, 2:980") == {"replay_from_offsets": {"0": 1200, "2": 980}}
    assert run.kafka_replay("2026-11-20T00:00:00Z") == {"replay_from_timestamp": "2026-11-20T00:00:00Z"}
    with pytest.raises(ValueError, match="neither an ISO-8601 moment nor partition:offset pairs"):
        run.kafka_replay("yesterday")
    scheduled = run.plan({"run_date": None, "sources": None}, _dag_run(
        logical_date=datetime(2026, 11, 18, tzinfo=timezone.utc), run_type="scheduled"))
    assert scheduled["ingest_date"] == "2026-11-18" and scheduled["sources"] == ["s3", "api", "db", "kafka"]
    assert run.plan({"run_date": "2026-11-01"}, _dag_run({"run_date": "2026-11-01"}))["ingest_date"] == "2026-11-01"
    with pytest.raises(ValueError, match=r"unknown conf key\(s\) 'run_dat': transactions_etl accepts run_date"):
        run.plan({"run_date": None}, _dag_run({"run_dat": "2026-11-01"}))


def test_sources_left_out_backfills_and_missing_connections_are_skipped_with_the_reason(stack_env, monkeypatch):
    from fluxo_platform.settings import get_settings
    from fluxo_tasks.pipeline import connection_ids, skip_reason

    assert connection_ids() == ["fluxo_warehouse", "fluxo_s3", "fluxo_partner_api", "fluxo_source_db", "fluxo_kafka"]
    monkeypatch.delenv("AIRFLOW_CONN_FLUXO_PARTNER_API", raising=False)
    monkeypatch.setenv("FLUXO_SOURCES", "s3,api,kafka")
    get_settings.cache_clear()
    try:
        assert skip_reason("s3", None) is None
        assert "switched off by FLUXO_SOURCES='s3,api,kafka'" in skip_reason("db", None)
        assert "not among this run's sources ['kafka']" in skip_reason("s3", ["kafka"])
        assert "reprocesses what was landed for its day" in skip_reason("s3", None, "backfill")
        assert "connection 'fluxo_partner_api' is not defined (set AIRFLOW_CONN_FLUXO_PARTNER_API" in \
            skip_reason("api", None)
    finally:
        get_settings.cache_clear()


def test_one_run_holds_the_slot_until_it_is_no_longer_active(stack_env, warehouse_url):
    from fluxo_tasks.run import claim_run_slot

    states = {"run-a": "running", "run-b": "queued"}
    state = lambda dag_id, run_id: states[run_id]  # noqa: E731 - Airflow's view of each run
    try:
        assert claim_run_slot(DAG, "run-a", state) is None
        assert claim_run_slot(DAG, "run-b", state) == "run-a"  # waits
        assert claim_run_slot(DAG, "run-a", state) is None      # the holder again (a retried sensor)
        states["run-a"] = "failed"                              # died without releasing the slot
        assert claim_run_slot(DAG, "run-b", state) is None
        assert claim_run_slot(DAG, "run-c", lambda *_: (_ for _ in ()).throw(KeyError("gone"))) is None
    finally:
        with psycopg.connect(warehouse_url, autocommit=True) as conn:
            conn.execute("DELETE FROM audit.run_lock WHERE dag_id = %s", (DAG,))


def _run(attempt=0):
    return {"dag_id": DAG, "run_id": "backfill__2026-11-19", "attempt": attempt, "ingest_date": "2026-11-19",
            "run_type": "backfill", "triggered_by": "ana", "triggering_user": "ana", "conf": {"sources": []},
            "logical_date": datetime(2026, 11, 19, tzinfo=timezone.utc),
            "started_at": datetime(2026, 11, 20, 1, tzinfo=timezone.utc)}


def test_every_attempt_of_a_run_adds_an_audit_row_with_stages_and_the_first_error(stack_env, warehouse_url):
    from fluxo_tasks.audit import raise_if_failed, write_run_record

    ok_states = {"extract.land_s3_files": "skipped", "standardize": "success", "quality_gate": "success",
                 "curate": "success", "aggregate": "success", "outliers": "success",
                 "load_warehouse": "success", "load_outlier_summary": "success"}
    results = {
        "standardize": {"mode": "local", "duration_s": 12.5, "glue_run_id": None,
                        "stats": {"read": 10, "staged": 7, "quarantined": 2, "duplicates_dropped": 1}},
        "quality_gate": {"stats": {"rows": 7, "critical_failed": 0, "warnings_failed": 1, "evaluated": 45,
                                   "seconds": 3.0}},
        "curate": {"stats": {"staged": 7, "already_curated": 1, "replaced": 0, "curated_new": 6, "dates": ["2026-11-18"],
                             "version": 3}},
        "fraud": None,
        "load_warehouse": {"metric_rows": 1, "duration_s": 0.2},
    }
    try:
        first = write_run_record(_run(0), ok_states, results)
        raise_if_failed(first)
        failed_states = {**ok_states, "curate": "failed", "aggregate": "upstream_failed"}
        error = {"task": "curate", "message": "Glue script curate failed (exit 1): disk full", "at": "2026-11-20T02:00"}
        second = write_run_record(_run(1), failed_states, results, error)
        with pytest.raises(RuntimeError, match=r"^curate failed: Glue script curate failed \(exit 1\): disk full$"):
            raise_if_failed(second)
        with psycopg.connect(warehouse_url) as conn:
            rows = conn.execute(
                "SELECT attempt, state, run_type, triggered_by, conf, started_at, stages, quality, fraud_alerts,"
                " error_task, error_message, message FROM audit.pipeline_runs WHERE dag_id = %s ORDER BY id", (DAG,)
            ).fetchall()
        assert [r[:2] for r in rows] == [(0, "success"), (1, "failed")]  # the first attempt is kept
        attempt, state, run_type, by, conf, started, stages, quality, fraud, error_task, error_message, message = rows[0]
        assert (run_type, by, conf, started.isoformat()) == ("backfill", "ana", {"sources": []}, "2026-11-20T01:00:00+00:00")
        assert stages["standardize"] == {"rows_in": 10, "rows_out": 7, "quarantined": 2, "duration_s": 12.5,
                                         "mode": "local", "glue_run_id": None, "skipped": None, "state": "success"}
        assert stages["curate"]["rows_out"] == 6 and stages["extract.land_s3_files"]["state"] == "skipped"
        assert quality == {"rows": 7, "critical_failed": 0, "warnings_failed": 1, "evaluated": 45}
        assert (fraud, error_task, error_message, message) == (None, None, None, None)
        assert rows[1][9:] == ("curate", error["message"], f"curate: {error['message']}")
    finally:
        with psycopg.connect(warehouse_url, autocommit=True) as conn:
            conn.execute("DELETE FROM audit.pipeline_runs WHERE dag_id = %s", (DAG,))


def test_full_refresh_forgets_the_extraction_progress_of_the_source(stack_env, warehouse_url):
    from fluxo_tasks.pipeline import forget_progress

    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        conn.execute("INSERT INTO extract.watermark (source, stream, value, batch_id) VALUES"
                     " ('refresh_test', 's', '{}'::jsonb, 'b1'), ('other_test', 's', '{}'::jsonb, 'b2')")
        forget_progress("refresh_test")
        left = conn.execute("SELECT source FROM extract.watermark WHERE source LIKE '%%_test'").fetchall()
        conn.execute("DELETE FROM extract.watermark WHERE source LIKE '%%_test'")
    assert left == [("other_test",)]
