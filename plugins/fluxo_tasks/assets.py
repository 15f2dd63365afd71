"""The Airflow Assets transactions_etl updates, so downstream DAGs can be scheduled on them.

    from fluxo_tasks.assets import CURATED, WAREHOUSE_METRICS
    @dag(schedule=[CURATED])            # runs after every curate that changed the lake

Each asset event carries `extra` = {"ingest_date", "dates"}: the ingest day the run processed
and the event dates it replaced. URIs use the `x-fluxo` scheme: the names are the stable part.
"""

from __future__ import annotations

from airflow.sdk import Asset

from fluxo.contract import METRIC_GRAINS


def _asset(name: str, where: str) -> Asset:
    return Asset(name=f"fluxo.{name}", uri=f"x-fluxo://{where}", group="fluxo")


CURATED = _asset("curated.transactions", "lake/curated/transactions")
OUTLIER_HISTORY = _asset("history.outliers", "lake/history/outliers")
WAREHOUSE_METRICS = [_asset(f"warehouse.metrics.{table}", f"warehouse/metrics/{table}")
                     for _contract, table in METRIC_GRAINS.values()]
OUTLIER_SUMMARY = _asset("warehouse.metrics.outlier_summary", "warehouse/metrics/outlier_summary")
FRAUD_HISTORY = _asset("history.fraud_alerts", "lake/history/fraud_alerts")
FRAUD_ALERTS = _asset("warehouse.metrics.fraud_alerts", "warehouse/metrics/fraud_alerts")

# task id -> the assets it updates
OUTLETS: dict[str, list[Asset]] = {
    "curate": [CURATED],
    "outliers": [OUTLIER_HISTORY],
    "fraud": [FRAUD_HISTORY],
    "load_warehouse": WAREHOUSE_METRICS,
    "load_outlier_summary": [OUTLIER_SUMMARY],
    "load_fraud_alerts": [FRAUD_ALERTS],
}


def annotate(context, task_id: str, ingest_date: str, dates: list[str] | None) -> None:
    """Put the day and the replaced event dates on the asset events of `task_id`."""
    for asset in OUTLETS.get(task_id, []):
        context["outlet_events"][asset].extra = {"ingest_date": ingest_date, "dates": list(dates or [])}
