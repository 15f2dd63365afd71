"""A run triggered the way the UI does it, on Airflow's real components (what `make airflow` starts).

api-server, scheduler, dag-processor and triggerer start on the session's services; the test
triggers `transactions_etl` through `/api/v2` with a bearer token from `POST /auth/token`, waits
for success, then reads the run back from Airflow's event log (with its run id) and from
`audit.pipeline_runs`. Kept cheap: the run's day is empty (one real extraction of an empty
landing prefix, one real Glue stage, then the volume check stops it), which also makes it
raise two real alerts to a local webhook receiver: the zero-volume warning and, with a
three-second deadline, the SLA miss from the triggerer.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import psutil
import psycopg
import pytest

from fluxo_dev.stack.airflow import metadata_database_url, rest_client
from fluxo_dev.stack.process import log_tail
from tests.alert_receiver import alert_receiver
from tests.conftest import TEST_HOME

DAG = "transactions_etl"
RUN_DATE = "2026-10-15"


@pytest.fixture(scope="module")
def airflow(stack_env, warehouse_url):
    from fluxo_dev.stack import Stack

    stack = Stack(home=TEST_HOME, progress=lambda message: None)
    with alert_receiver() as receiver:
        extra = {
            "FLUXO_ALERT_WEBHOOK_URL": receiver.url,
            "FLUXO_RUN_DEADLINE_MINUTES": "0.05",
            # an empty landing prefix: the extraction runs for real and finds an empty day
            "FLUXO_LANDING_PREFIX": f"ui-run-{uuid.uuid4().hex[:8]}",
            # only the run this test triggers: no scheduled run beside it
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        }
        started = time.monotonic()
        try:
            env, login = stack.start_airflow(extra, feeds=False)
            client = rest_client(env, login)
            yield {"client": client, "receiver": receiver, "stack": stack, "user": login[0],
                   "start_s": time.monotonic() - started}
        finally:
            stack.stop_airflow()


def _wait(check, timeout: float, what: str, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def triggered(airflow):
    client = airflow["client"]
    _wait(lambda: client.get(f"/dags/{DAG}").status_code == 200, 240, "the DAG to be parsed")
    assert client.patch(f"/dags/{DAG}", json={"is_paused": False}).status_code == 200
    conf = {"run_date": RUN_DATE, "sources": ["s3"]}
    started = time.monotonic()
    answer = client.post(f"/dags/{DAG}/dagRuns", json={"logical_date": None, "conf": conf})
    assert answer.status_code == 200, answer.text
    run_id = answer.json()["dag_run_id"]

    def finished():
        state = client.get(f"/dags/{DAG}/dagRuns/{run_id}").json()["state"]
        return state if state in ("success", "failed") else None

    state = _wait(finished, 600, f"run {run_id} to finish", interval=3)
    return {"run_id": run_id, "state": state, "conf": conf, "run_s": time.monotonic() - started}


def test_a_run_triggered_through_the_rest_api_succeeds(airflow, triggered):
    client = airflow["client"]
    states = {ti["task_id"]: ti["state"] for ti in
              client.get(f"/dags/{DAG}/dagRuns/{triggered['run_id']}/taskInstances").json()["task_instances"]}
    assert triggered["state"] == "success", states
    assert states["extract.land_s3_files"] == states["standardize"] == "success"
    # the sources the form left out, and the stages an empty day does not need, are skipped
    assert states["extract.land_kafka"] == states["quality_gate"] == states["load_warehouse"] == "skipped"
    assert states["record_audit"] == states["fail_run_if_a_stage_failed"] == "success"
    print(f"\nairflow up in {airflow['start_s']:.0f}s, run {triggered['run_s']:.0f}s")


def test_each_task_is_reported_finished_within_seconds_of_its_last_log_line(airflow, triggered):
    """The task supervisor reports a task's end when it sees the process exit; with Airflow's default
    5 s heartbeat interval it slept that long whenever the task closed its sockets just before exiting
    (one of the parallel extract tasks of most runs). The stack sets 1 s."""
    client = airflow["client"]
    instances = client.get(f"/dags/{DAG}/dagRuns/{triggered['run_id']}/taskInstances").json()["task_instances"]
    late, checked = {}, []
    for ti in instances:
        if not ti["end_date"] or ti["state"] not in ("success", "skipped"):
            continue
        log = client.get(f"/dags/{DAG}/dagRuns/{triggered['run_id']}/taskInstances/{ti['task_id']}/logs/1",
                         headers={"Accept": "application/json"}).json()
        stamps = [line["timestamp"] for line in log.get("content", []) if isinstance(line, dict) and line.get("timestamp")]
        if not stamps:
            continue
        checked.append(ti["task_id"])
        lag = (datetime.fromisoformat(ti["end_date"].replace("Z", "+00:00"))
               - datetime.fromisoformat(max(stamps).replace("Z", "+00:00"))).total_seconds()
        if lag > 3.5:
            late[ti["task_id"]] = round(lag, 2)
    # the tasks that ran wrote log lines with timestamps: the four extract tasks and standardize at least
    assert {"extract.land_s3_files", "extract.land_kafka", "standardize"} <= set(checked), checked
    assert not late, f"tasks reported finished this many seconds after their last log line: {late}"


def test_the_event_log_records_the_trigger_with_its_run_id(airflow, triggered):
    client = airflow["client"]
    events = client.get("/eventLogs", params={"dag_id": DAG, "run_id": triggered["run_id"],
                                               "event": "dag_run_started"}).json()["event_logs"]
    assert len(events) == 1, events
    assert events[0]["run_id"] == triggered["run_id"] and events[0]["owner"] == airflow["user"]
    assert '"run_type": "manual"' in events[0]["extra"] and RUN_DATE in events[0]["extra"]
    # Airflow's own entry of the REST call says who triggered, and with which conf
    triggers = client.get("/eventLogs", params={"dag_id": DAG, "event": "trigger_dag_run"}).json()["event_logs"]
    assert any(e["owner"] == airflow["user"] and RUN_DATE in (e["extra"] or "") for e in triggers)


def test_the_run_audit_says_who_triggered_what_and_how_each_stage_went(triggered, warehouse_url):
    with psycopg.connect(warehouse_url) as conn:
        rows = conn.execute(
            "SELECT state, ingest_date::text, run_type, triggered_by, triggering_user, conf, started_at, finished_at,"
            " stages, error_task, attempt FROM audit.pipeline_runs WHERE run_id = %s", (triggered["run_id"],)
        ).fetchall()
    assert len(rows) == 1
    state, day, run_type, by, user, conf, started, finished, stages, error_task, attempt = rows[0]
    assert (state, day, run_type, by, user, conf) == ("success", RUN_DATE, "manual", "admin", "admin",
                                                      triggered["conf"])
    assert started is not None and started < finished and error_task is None and attempt == 0
    assert stages["standardize"]["state"] == "success" and stages["standardize"]["rows_out"] == 0
    assert stages["standardize"]["mode"] == "local" and stages["standardize"]["duration_s"] > 0
    assert stages["extract.land_s3_files"]["state"] == "success"
    assert stages["curate"]["state"] == "skipped"


def test_the_empty_day_and_the_missed_deadline_alert_the_webhook(airflow, triggered):
    receiver = airflow["receiver"]
    volume = receiver.wait_for("volume", timeout=30)
    assert volume and "zero rows" in volume[0]["text"] and volume[0]["run_id"] == triggered["run_id"]
    late = receiver.wait_for("deadline_missed", timeout=120)
    assert late, _deadline_trail(airflow["stack"], triggered["run_id"])
    assert triggered["run_id"] in late[0]["text"] and late[0]["run_id"] == triggered["run_id"]
    assert late[0]["severity"] == "critical" and late[0]["dag_id"] == DAG


def _deadline_trail(stack, run_id: str) -> str:
    """Where a missing deadline alert stopped: the run's deadline rows and their callbacks in Airflow's
    database (missed? callback state?), the run's times and the deadline alerts of the DAG version it
    was created with (none: Airflow created no deadline for it), and each component's lines about
    deadlines, then the triggerer's last lines."""
    with psycopg.connect(metadata_database_url(stack.airflow_env())) as conn:
        rows = conn.execute(
            "SELECT d.deadline_time, d.missed, c.state, c.output FROM deadline d JOIN dag_run r ON r.id = d.dagrun_id"
            " LEFT JOIN callback c ON c.id = d.callback_id WHERE r.run_id = %s", (run_id,)).fetchall()
        run = conn.execute(
            "SELECT r.queued_at, r.start_date, r.end_date, (SELECT count(*) FROM deadline_alert a JOIN serialized_dag s"
            " ON s.id = a.serialized_dag_id WHERE s.dag_version_id = r.created_dag_version_id)"
            " FROM dag_run r WHERE r.run_id = %s", (run_id,)).fetchall()
    lines = [f"no deadline_missed alert; deadline rows of {run_id}: {rows}",
             f"queued_at, start_date, end_date, deadline alerts of its DAG version: {run}"]
    for name, component in stack.airflow.items():
        try:
            text = component.log_file.read_text(errors="replace")
        except OSError:
            continue
        lines += [f"{name}: {line}" for line in text.splitlines() if "eadline" in line][-10:]
    return "\n".join(lines) + "\n" + log_tail(stack.airflow["airflow-triggerer"].log_file)


def test_airflow_and_spark_listen_on_loopback_only(airflow, triggered):
    client, stack = airflow["client"], airflow["stack"]
    pids = set()
    for component in stack.airflow.values():
        root = psutil.Process(component.pid())
        pids |= {root.pid, *(child.pid for child in root.children(recursive=True))}
    listening = [c for c in psutil.net_connections("inet") if c.pid in pids and c.status == psutil.CONN_LISTEN]
    assert listening, "the api-server listens somewhere"
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}, listening
    # Spark warns when it binds the host's own address instead of SPARK_LOCAL_IP's loopback
    log = client.get(f"/dags/{DAG}/dagRuns/{triggered['run_id']}/taskInstances/standardize/logs/1",
                     headers={"Accept": "application/json"}).text
    # the stage's own output is in the task log (over the stack's warm Spark it has no JVM output of its own)
    assert "JOB_NAME fluxo-standardize" in log, log[-3000:]
    assert "standardize: stats written to" in log, log[-3000:]
    assert "Set SPARK_LOCAL_IP" not in log
