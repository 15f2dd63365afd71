"""Warehouse side of the fraud stage: load the day's alerts into metrics.fraud_alerts."""

from __future__ import annotations

from fluxo.contract import FRAUD_ALERT
from fluxo_tasks.pipeline import FRAUD_STAGE, load_day_results, timed


@timed
def load_fraud_alerts(ingest_date: str, run_id: str, result: dict | None = None) -> dict:
    """COPY work/metrics/fraud_alerts/ingest_date=D into metrics.fraud_alerts, replacing every event
    date the fraud stage scored (a day left with no alert is emptied; a rerun never doubles)."""
    loaded = load_day_results(FRAUD_STAGE, "fraud_alerts", FRAUD_ALERT, ingest_date, run_id, result)
    return {"alert_rows": loaded["rows"], "replaced": loaded["replaced"], "dates": loaded["dates"]}
