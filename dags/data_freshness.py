"""Hourly freshness check: alert when the latest curated day is older than FLUXO_FRESHNESS_MAX_AGE_HOURS.

The latest curated day is the newest event date loaded into the warehouse's daily metrics, what
the API and BI tools serve. A stale lake alerts through the webhook (event `stale_data`) and
fails this check, every hour until transactions_etl catches up; docs/runbook.md says what to do.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task
from fluxo_alerts.checks import check_freshness


@dag(
    dag_id="data_freshness",
    schedule="@hourly",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    tags=["fluxo", "monitoring"],
    doc_md=__doc__,
)
def data_freshness():
    @task(retries=0, execution_timeout=timedelta(minutes=5))
    def check_curated_freshness(**context) -> dict:
        return check_freshness(context=context)

    check_curated_freshness()


data_freshness()
