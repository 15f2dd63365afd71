"""DAG integrity: every DAG file imports under Airflow 3.3 with no errors, and is wired as designed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fluxo_platform.settings import REPO_ROOT

PROBE = textwrap.dedent(
    """
    import json
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=%r)
    out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
    for dag_id, dag in bag.dags.items():
        out["dags"][dag_id] = {
            "tasks": sorted(dag.task_dict),
            "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
            "schedule": str(dag.schedule),
            "params": {k: dag.params.get_param(k).schema for k in dag.params.keys()},
            "timeouts": {t.task_id: t.execution_timeout.total_seconds() if t.execution_timeout else None
                         for t in dag.tasks},
            "retries": {t.task_id: [t.retries, t.retry_exponential_backoff] for t in dag.tasks},
            "outlets": {t.task_id: sorted(a.name for a in t.outlets) for t in dag.tasks if t.outlets},
            "run_timeout": dag.dagrun_timeout.total_seconds() if dag.dagrun_timeout else None,
            "deadline": [str(d.interval) for d in (dag.deadline or [])],
            "max_active_runs": dag.max_active_runs,
        }
    print("DAGBAG" + json.dumps(out))
    """
) % str(REPO_ROOT / "dags")


def _dagbag(tmp_path, **settings) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(settings)
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO_ROOT / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO_ROOT / "plugins"),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "plugins"), str(REPO_ROOT / "dags")]),
    )
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("DAGBAG"))
    return json.loads(line.removeprefix("DAGBAG"))


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> dict:
    return _dagbag(tmp_path_factory.mktemp("dagbag"))


def test_every_dag_imports_without_errors(bag):
    assert bag["errors"] == {}
    assert {"transactions_etl", "lake_maintenance", "data_freshness"} <= set(bag["dags"])
    assert bag["dags"]["data_freshness"]["schedule"] == "@hourly"


def test_transactions_etl_runs_stages_in_order(bag):
    dag = bag["dags"]["transactions_etl"]
    extract = ["extract.land_s3_files", "extract.extract_partner_api", "extract.extract_source_db", "extract.land_kafka"]
    after = {
        "standardize": extract,
        "quality_gate": ["standardize"],
        "curate": ["quality_gate"],
        "fraud": ["curate"],
        "aggregate": ["curate", "fraud"],
        "outliers": ["curate"],
        "load_warehouse": ["aggregate"],
        "load_outlier_summary": ["outliers"],
        "load_fraud_alerts": ["fraud"],
        "record_audit": ["load_warehouse", "load_outlier_summary", "load_fraud_alerts"],
    }
    for task, upstream in after.items():
        assert set(upstream) <= set(dag["upstream"][task]), f"{task} must run after {upstream}"
    # an empty day stops after standardize (the volume check short-circuits the later stages)
    assert "check_day_volume" in dag["upstream"]["quality_gate"]
    # the run's first task takes the run slot: one run at a time, backfills included
    assert set(dag["upstream"]["extract.land_s3_files"]) == {"plan_run", "wait_for_run_slot"}
    # the audit waits for every stage; the final check reads it and fails the run with the first error
    assert dag["upstream"]["fail_run_if_a_stage_failed"] == ["record_audit"]
    assert dag["schedule"] == "@daily"


def test_trigger_form_has_an_optional_date_a_sources_subset_and_a_full_refresh(bag):
    params = bag["dags"]["transactions_etl"]["params"]
    assert set(params) == {"run_date", "sources", "full_refresh", "kafka_replay_from"}
    # optional: the UI enables Trigger with the date empty, and shows a date picker
    assert params["run_date"]["type"] == ["null", "string"] and params["run_date"]["format"] == "date"
    assert params["sources"]["items"]["enum"] == ["s3", "api", "db", "kafka"]
    assert params["full_refresh"]["type"] == "boolean"
    assert params["kafka_replay_from"]["type"] == ["null", "string"]


def test_every_task_has_a_timeout_and_retries_back_off(tmp_path):
    dag = _dagbag(tmp_path, FLUXO_GLUE_TIMEOUT_MINUTES="30", FLUXO_RUN_TIMEOUT_MINUTES="90",
                  FLUXO_RUN_DEADLINE_MINUTES="45")["dags"]["transactions_etl"]
    assert dag["run_timeout"] == 90 * 60 and dag["deadline"] == ["0:45:00"] and dag["max_active_runs"] == 1
    for task, seconds in dag["timeouts"].items():
        if task not in ("wait_for_run_slot", "fail_run_if_a_stage_failed"):  # a sensor's own timeout; a raise
            assert seconds, f"{task} has no execution_timeout"
    assert dag["timeouts"]["standardize"] == (30 + 15) * 60  # the Glue job's timeout and a margin
    assert dag["retries"]["extract.land_kafka"] == [3, 2.0]
    assert dag["retries"]["curate"] == [1, 2.0]
    # deterministic failures are not retried
    assert dag["retries"]["quality_gate"][0] == dag["retries"]["plan_run"][0] == 0


def test_curated_and_warehouse_outputs_are_assets(bag):
    outlets = bag["dags"]["transactions_etl"]["outlets"]
    assert outlets["curate"] == ["fluxo.curated.transactions"]
    assert outlets["outliers"] == ["fluxo.history.outliers"]
    assert outlets["fraud"] == ["fluxo.history.fraud_alerts"]
    assert outlets["load_fraud_alerts"] == ["fluxo.warehouse.metrics.fraud_alerts"]
    assert "fluxo.warehouse.metrics.daily_transactions" in outlets["load_warehouse"]
    assert outlets["load_outlier_summary"] == ["fluxo.warehouse.metrics.outlier_summary"]


def test_the_fraud_stage_is_one_registry_line():
    from fluxo_tasks import pipeline

    stages = pipeline.GLUE_STAGES
    assert list(stages) == ["standardize", "quality_gate", "curate", "fraud", "aggregate", "outliers"]
    assert stages["fraud"].after == ("curate",) and "fraud" in stages["aggregate"].after
    # every stage has its script, and the audit reads its counts by the registry's keys
    for name in stages:
        assert (REPO_ROOT / "glue_scripts" / f"{name}.py").is_file()
    assert pipeline.STAGES[-len(pipeline.LOAD_TASKS):] == pipeline.LOAD_TASKS
