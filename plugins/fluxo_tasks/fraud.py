"""Warehouse side of the fraud stage: load the day's alerts into metrics.fraud_alerts."""

from __future__ import annotations

from fluxo.contract import FRAUD_ALERT
from fluxo_platform import lakefs
from fluxo_tasks.pipeline import FRAUD_STAGE, load_day_results, timed


def _history_rows(lake, dates):
    """The alert history's rows of the event dates (delta-rs, no Spark); the latest version: one run
    at a time, so it is the fraud stage's MERGE or a later run's truth for those dates."""
    if not dates:
        return FRAUD_ALERT.arrow_schema().empty_table()
    return lakefs.read_delta(lake.fraud_alerts, FRAUD_ALERT.arrow_schema(), filters=[("event_date", "in", dates)])


@timed
def load_fraud_alerts(ingest_date: str, run_id: str, result: dict | None = None) -> dict:
    """COPY the alert history's rows of every event date the fraud stage scored into
    metrics.fraud_alerts, replacing those dates (a day left with no alert is emptied; a rerun never
    doubles). An unchanged alert keeps the run that first raised it, in the lake and here alike."""
    loaded = load_day_results(FRAUD_STAGE, "fraud_alerts", FRAUD_ALERT, ingest_date, run_id, result,
                              read_rows=_history_rows)
    return {"alert_rows": loaded["rows"], "replaced": loaded["replaced"], "dates": loaded["dates"]}
