"""What one run of `transactions_etl` is: its trigger form, the plan it follows, one run at a time,
its first error, and the time limits of its tasks.

The trigger form (`PARAMS`) is what a person fills in the Airflow UI; `plan` checks the run's
conf against it (an unknown key fails the run at once, naming the keys it accepts) and decides
the day, the sources and whether extraction starts from scratch.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import date, datetime, timedelta, timezone
from typing import Any

from airflow.sdk import Param
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from fluxo.sources import SOURCE_NAMES
from fluxo.tokenize import mask_pans
from fluxo_platform.settings import get_settings
from fluxo_platform.warehouse import warehouse_connection

log = logging.getLogger(__name__)

PARAMS = {
    "run_date": Param(
        None, type=["null", "string"], format="date", title="Run date",
        description="Ingest day to process (YYYY-MM-DD). Empty: the run's logical date, else the day it was triggered.",
    ),
    "sources": Param(
        list(SOURCE_NAMES), type="array", items={"type": "string", "enum": list(SOURCE_NAMES)}, uniqueItems=True,
        title="Sources to extract",
        description="Sources whose new records this run lands (FLUXO_SOURCES can switch more off). "
                    "None: reprocess only what was already landed for the day.",
    ),
    "full_refresh": Param(
        False, type="boolean", title="Full refresh",
        description="Forget the extraction watermarks of the chosen sources and read them from the beginning. "
                    "Nothing doubles: curate keeps the first copy of every transaction.",
    ),
    "kafka_replay_from": Param(
        None, type=["null", "string"], title="Replay Kafka from",
        description="Read the topic again from a moment (ISO-8601, e.g. 2026-11-20T00:00:00Z) or from offsets "
                    "(partition:offset,..., e.g. 0:1200,2:980) into a new batch; curate keeps one copy.",
    ),
}
# Where an error a task raised is kept for the audit (an XCom of the failed task).
ERROR_KEY = "fluxo_error"
_ERROR_CHARS = 2000
_ACTIVE = ("queued", "running")


def resolve_ingest_date(params: dict, logical_date: datetime | None, run_after: datetime | None) -> str:
    """The day a run processes: the `run_date` param, else the logical date, else when it was triggered."""
    chosen = params.get("run_date") or ""
    if chosen:
        return date.fromisoformat(str(chosen)).isoformat()
    moment = logical_date or run_after
    if moment is None:
        raise ValueError("the run has neither a run_date param nor a logical date")
    return moment.date().isoformat()


def plan(params: dict, dag_run: Any) -> dict:
    """The run's plan from its params and conf; raises on a conf key the form does not have."""
    unknown = sorted(set(dag_run.conf or {}) - set(PARAMS))
    if unknown:
        raise ValueError(
            f"unknown conf key(s) {', '.join(map(repr, unknown))}: transactions_etl accepts "
            f"{', '.join(PARAMS)} (see the trigger form)"
        )
    sources = params.get("sources")
    return {
        "ingest_date": resolve_ingest_date(params, dag_run.logical_date, dag_run.run_after),
        "sources": list(SOURCE_NAMES if sources is None else sources),
        "full_refresh": bool(params.get("full_refresh")),
        "run_type": str(getattr(dag_run.run_type, "value", dag_run.run_type)),
        "kafka_replay": kafka_replay(params.get("kafka_replay_from")),
    }


def kafka_replay(text: str | None) -> dict:
    """`land_kafka`'s replay arguments from the form: a moment, or partition:offset pairs."""
    text = (text or "").strip()
    if not text:
        return {}
    if re.fullmatch(r"\d+:\d+(\s*,\s*\d+:\d+)*", text):
        return {"replay_from_offsets": {p.strip(): int(o) for p, o in (pair.split(":") for pair in text.split(","))}}
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"kafka_replay_from {text!r} is neither an ISO-8601 moment nor partition:offset pairs") from None
    return {"replay_from_timestamp": text}


# --- one run at a time ---------------------------------------------------------------------------


def claim_run_slot(dag_id: str, run_id: str, run_state=None) -> str | None:
    """Take the DAG's run slot (audit.run_lock); returns the run that holds it instead, or None when taken.

    Airflow counts backfill runs apart from the DAG's `max_active_runs`, so a backfill and a
    scheduled run could process two days at once; every run waits here for the slot. A holder
    that is no longer queued or running (failed, cleared, deleted) leaves a stale slot, which
    is taken over. `run_state(dag_id, run_id)` is Airflow's state of a run (the task SDK's).
    """
    if run_state is None:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        run_state = RuntimeTaskInstance.get_dagrun_state
    with warehouse_connection() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"fluxo-run-slot:{dag_id}",))
        row = conn.execute("SELECT run_id FROM audit.run_lock WHERE dag_id = %s", (dag_id,)).fetchone()
        if row and row[0] != run_id and _active(run_state, dag_id, row[0]):
            return row[0]
        conn.execute(
            "INSERT INTO audit.run_lock (dag_id, run_id) VALUES (%s, %s) ON CONFLICT (dag_id)"
            " DO UPDATE SET run_id = EXCLUDED.run_id, claimed_at = now()",
            (dag_id, run_id),
        )
    if row and row[0] != run_id:
        log.warning("run %s held the slot of %s but is no longer active: slot taken over", row[0], dag_id)
    return None


def release_run_slot(conn, dag_id: str, run_id: str) -> None:
    conn.execute("DELETE FROM audit.run_lock WHERE dag_id = %s AND run_id = %s", (dag_id, run_id))


def _active(run_state, dag_id: str, run_id: str) -> bool:
    try:
        return str(run_state(dag_id, run_id)) in _ACTIVE
    except Exception as exc:  # noqa: BLE001 - a run Airflow no longer knows holds nothing
        log.warning("state of run %s unknown (%s): its slot is stale", run_id, exc)
        return False


# --- the first error -----------------------------------------------------------------------------


def remember_error(context) -> None:
    """on_failure_callback of every task: keep the task's own error message for the run audit
    (card numbers masked: the message is stored in the warehouse and sent in alerts)."""
    ti, exc = context["ti"], context.get("exception")
    message = mask_pans(str(exc) if exc is not None else "") or type(exc).__name__
    ti.xcom_push(key=ERROR_KEY, value={
        "task": ti.task_id,
        "message": message[:_ERROR_CHARS],
        "at": datetime.now(timezone.utc).isoformat(),
    })


def first_error(errors: list[dict | None]) -> dict | None:
    found = [e for e in errors if e]
    return min(found, key=lambda e: e.get("at") or "") if found else None


# --- time limits ---------------------------------------------------------------------------------


def limits() -> dict[str, dict[str, Any]]:
    """execution_timeout / retries per kind of task, from the settings (read when the DAG is parsed).

    Retries only where a retry can help: a source or the warehouse briefly unreachable, a
    Spark/Glue job lost to its machine. A failed quality gate or a bad conf fails the same way
    again, so those tasks never retry. Waits grow exponentially (x2) up to 30 minutes.
    """
    settings = get_settings()
    backoff = {"retry_delay": timedelta(minutes=1), "retry_exponential_backoff": 2.0,
               "max_retry_delay": timedelta(minutes=30)}
    return {
        "plan": {"retries": 0, "execution_timeout": timedelta(minutes=5)},
        "extract": {"retries": 3, "execution_timeout": timedelta(hours=1), **backoff},
        # local runs and AWS Glue both stop well after Glue's own job timeout would have
        "glue": {"retries": 1, "execution_timeout": timedelta(minutes=settings.glue_timeout_minutes + 15), **backoff},
        "load": {"retries": 2, "execution_timeout": timedelta(minutes=30), **backoff},
        "check": {"retries": 0, "execution_timeout": timedelta(minutes=10)},
    }


def run_timeout() -> timedelta:
    return timedelta(minutes=get_settings().run_timeout_minutes)


def deadline_alerts(notifier: type, **kwargs) -> list[DeadlineAlert]:
    """The SLA: `notifier(**kwargs)` runs in the triggerer when a run is not finished FLUXO_RUN_DEADLINE_MINUTES
    after it was queued (0 turns it off).

    Left out under `airflow dags test`: Airflow 3.3.2's test loop cannot finish a run of a DAG
    with a deadline alert (it looks the alert up by its serialized form instead of its id), and
    no scheduler watches deadlines there anyway.
    """
    minutes = get_settings().run_deadline_minutes
    if minutes <= 0 or sys.argv[1:3] == ["dags", "test"]:
        return []
    return [DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=timedelta(minutes=minutes),
                          callback=AsyncCallback(notifier, kwargs=kwargs))]
