"""Airflow plugin: every DAG run that starts leaves an entry in Airflow's event log, with its run id.

Airflow logs a trigger from the UI or the REST API without the run id it creates (the request
did not name one), and a scheduled or backfill run not at all. This listener adds one
`dag_run_started` entry per run as the scheduler starts it: run id, logical date, who
triggered it (`owner`) and, in `extra`, the run type and conf. Browse -> Audit Log in the UI,
or `GET /api/v2/eventLogs?event=dag_run_started&run_id=...`.
"""

from __future__ import annotations

import json
import logging
import sys

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

EVENT = "dag_run_started"
log = logging.getLogger(__name__)


@hookimpl
def on_dag_run_running(dag_run, msg: str) -> None:
    from airflow import settings
    from airflow.models.log import Log

    run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
    try:
        # a session of its own: the scheduler's (scoped) session is in the middle of its loop
        with settings.NonScopedSession() as session, session.begin():
            session.add(Log(
                event=EVENT,
                owner=dag_run.triggering_user_name or "scheduler",
                dag_id=dag_run.dag_id,
                run_id=dag_run.run_id,
                logical_date=dag_run.logical_date,
                extra=json.dumps({"run_type": str(run_type), "conf": dag_run.conf or {}, "note": msg},
                                 default=str),
            ))
    except Exception:  # noqa: BLE001 - an audit entry must never stop the scheduler
        log.exception("could not record the start of run %s in the event log", dag_run.run_id)


class FluxoRunEventsPlugin(AirflowPlugin):
    name = "fluxo_run_events"
    listeners = [sys.modules[__name__]]
