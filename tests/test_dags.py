"""DAG integrity: every DAG file imports under Airflow 3.3 with no errors, and is wired as designed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from fluxo.settings import REPO_ROOT

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
            "params": sorted(dag.params.keys()),
        }
    print("DAGBAG" + json.dumps(out))
    """
) % str(REPO_ROOT / "dags")


def _dagbag(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
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


def test_every_dag_imports_without_errors(tmp_path):
    bag = _dagbag(tmp_path)
    assert bag["errors"] == {}
    assert "transactions_etl" in bag["dags"]


def test_transactions_etl_runs_stages_in_order(tmp_path):
    dag = _dagbag(tmp_path)["dags"]["transactions_etl"]
    order = ["land_s3_files", "standardize", "quality_gate", "curate", "aggregate", "load_warehouse", "record_audit"]
    assert set(order) <= set(dag["tasks"])
    for before, after in zip(order, order[1:]):
        assert before in dag["upstream"][after], f"{after} must run after {before}"
    assert "run_date" in dag["params"]
    assert dag["schedule"] == "@daily"
