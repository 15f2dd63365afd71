"""Warehouse side of the outliers stage: load the day's outlier summary into metrics.outlier_summary."""

from __future__ import annotations

import logging
from datetime import date

from fluxo_platform import lakefs
from fluxo.contract import OUTLIER_SUMMARY
from fluxo.lake import Lake
from fluxo_platform.settings import get_settings
from fluxo_platform.warehouse import replace_days
from fluxo_platform.warehouse import warehouse_connection
from fluxo_tasks.pipeline import timed

log = logging.getLogger(__name__)
STAGE = "outliers"


@timed
def load_outlier_summary(ingest_date: str, run_id: str, result: dict | None = None) -> dict:
    """COPY work/metrics/outlier_summary/ingest_date=D into metrics.outlier_summary.

    `result` is the outliers task's XCom (its stats say which event dates it recomputed);
    without it the stage's results document for the ingest date is read.

    Each event date the outliers stage recomputed (the `dates` of its stats) is replaced
    as a whole, in one transaction: a (date, method, mcc) that no longer has outliers
    disappears, and a rerun never duplicates.
    """
    lake = Lake(get_settings().lake_root)
    stats = (result or {}).get("stats") or lakefs.read_json(lake.stats(ingest_date, STAGE))
    if stats is None:
        raise FileNotFoundError(f"no outliers stats for ingest date {ingest_date}: run the outliers stage first")
    dates = [date.fromisoformat(d) for d in stats.get("dates", [])]
    summary = lakefs.read_parquet(lake.metrics("outlier_summary", ingest_date))
    summary = OUTLIER_SUMMARY.arrow_schema().empty_table() if summary is None else summary.select(OUTLIER_SUMMARY.names)
    with warehouse_connection() as conn:
        # `days`: a recomputed day left with no outliers is emptied too
        result = replace_days(conn, "metrics", "outlier_summary", summary, "event_date", {"run_id": run_id}, days=dates)
    copied, cleared = result["copied"], result["replaced"]
    log.info("loaded %d outlier summary rows for %s (event dates %s, %d replaced)",
             copied, ingest_date, stats.get("dates"), cleared)
    return {"summary_rows": copied, "replaced": cleared, "dates": stats.get("dates", [])}
