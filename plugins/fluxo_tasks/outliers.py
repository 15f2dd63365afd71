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


def load_day_results(stage: str, name: str, contract, ingest_date: str, run_id: str,
                     result: dict | None = None) -> dict:
    """COPY work/metrics/<name>/ingest_date=D into metrics.<name>, replacing whole event dates.

    `result` is the stage task's XCom (its stats say which event dates it recomputed); without it
    the stage's results document for the ingest date is read. Each event date the stage
    recomputed (the `dates` of its stats) is replaced as a whole, in one transaction: a group
    that vanished disappears (a day left empty is emptied), and a rerun never duplicates.
    """
    lake = Lake(get_settings().lake_root)
    stats = (result or {}).get("stats") or lakefs.read_json(lake.stats(ingest_date, stage))
    if stats is None:
        raise FileNotFoundError(f"no {stage} stats for ingest date {ingest_date}: run the {stage} stage first")
    dates = [date.fromisoformat(d) for d in stats.get("dates", [])]
    rows = lakefs.read_parquet(lake.metrics(name, ingest_date))
    rows = contract.arrow_schema().empty_table() if rows is None else rows.select(contract.names)
    extra = {} if "run_id" in contract.names else {"run_id": run_id}  # alerts carry the run that scored them
    with warehouse_connection() as conn:
        result = replace_days(conn, "metrics", name, rows, "event_date", extra, days=dates)
    log.info("loaded %d %s rows for %s (event dates %s, %d replaced)",
             result["copied"], name, ingest_date, stats.get("dates"), result["replaced"])
    return {"rows": result["copied"], "replaced": result["replaced"], "dates": stats.get("dates", [])}


@timed
def load_outlier_summary(ingest_date: str, run_id: str, result: dict | None = None) -> dict:
    """COPY work/metrics/outlier_summary/ingest_date=D into metrics.outlier_summary (`load_day_results`)."""
    loaded = load_day_results(STAGE, "outlier_summary", OUTLIER_SUMMARY, ingest_date, run_id, result)
    return {"summary_rows": loaded["rows"], "replaced": loaded["replaced"], "dates": loaded["dates"]}
