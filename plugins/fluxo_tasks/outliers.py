"""Warehouse side of the outliers stage: load the day's outlier summary into metrics.outlier_summary."""

from __future__ import annotations

from fluxo.contract import OUTLIER_SUMMARY
from fluxo_tasks.pipeline import load_day_results, timed

STAGE = "outliers"


@timed
def load_outlier_summary(ingest_date: str, run_id: str, result: dict | None = None) -> dict:
    """COPY work/metrics/outlier_summary/ingest_date=D into metrics.outlier_summary (`load_day_results`)."""
    loaded = load_day_results(STAGE, "outlier_summary", OUTLIER_SUMMARY, ingest_date, run_id, result)
    return {"summary_rows": loaded["rows"], "replaced": loaded["replaced"], "dates": loaded["dates"]}
