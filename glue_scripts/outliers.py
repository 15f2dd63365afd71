"""Outliers stage: robust-statistics outliers of the event dates a run touched, into the Delta history.

    outliers.py --JOB_NAME outliers --lake_root ROOT --ingest_date YYYY-MM-DD
                [--history_days 30] [--run_id ID]

The event dates are the days curate replaced for the ingest date, or --event_dates (like aggregate). Baselines are
computed over the curated partitions from (earliest touched date − history_days) to the
latest touched date; the touched dates are scored (methods in fluxo.transforms.outliers).
The flagged rows are MERGEd into the Delta table Lake.outlier_history with delta-rs on
(transaction_id, method) — rule in fluxo.history — so a rerun adds nothing. The day's
summary (per event_date × method × mcc) overwrites work/metrics/outlier_summary/ingest_date=D/.
Stats: work/stats/ingest_date=D/outliers.json.

The flagged rows are brought to the driver as Arrow for delta-rs: they are a tiny fraction
of the input (about 0.1% on the generator's data), not the curated rows themselves.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone

from pyspark import StorageLevel

from fluxo import history
from fluxo.contract import OUTLIER_METHODS
from fluxo.glue_runtime import curated_days, run_stage, start_stage, write_stats
from fluxo.transforms._common import event_date
from fluxo.transforms.curate import read_partitions
from fluxo.transforms.outliers import detect, outlier_summary

STAGE = "outliers"


def history_window(dates: list[str], history_days: int) -> list[str]:
    """Every day from (earliest touched − history_days) to the latest touched date."""
    if not dates:
        return []
    first = date.fromisoformat(min(dates)) - timedelta(days=history_days)
    last = date.fromisoformat(max(dates))
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def main() -> None:
    rt = start_stage(["lake_root", "ingest_date"], {"history_days": "30", "run_id": None, "JOB_RUN_ID": None, "event_dates": None})
    spark, lake = rt.spark, rt.lake
    ingest_date = rt.args["ingest_date"]
    history_days = int(rt.args["history_days"])
    if history_days < 0:
        raise ValueError("--history_days must be >= 0")
    run_id = rt.args["run_id"] or rt.args["JOB_RUN_ID"] or f"{STAGE}-{ingest_date}"
    detected_at = datetime.now(timezone.utc).replace(microsecond=0)

    dates = curated_days(rt)
    window = history_window(dates, history_days)
    baseline_rows = read_partitions(spark, lake.curated_transactions, window)
    candidates = baseline_rows.where(event_date().isin([date.fromisoformat(d) for d in dates]))
    outliers = detect(candidates, baseline_rows, run_id, detected_at).persist(StorageLevel.MEMORY_AND_DISK)

    clock = time.perf_counter()
    flagged = outliers.toArrow()
    seconds = {"detect": time.perf_counter() - clock}
    clock = time.perf_counter()
    merged = history.merge_outliers(lake.outlier_history, flagged, dates)
    seconds["delta_merge"] = time.perf_counter() - clock
    clock = time.perf_counter()
    outlier_summary(outliers).coalesce(1).write.mode("overwrite").parquet(lake.metrics("outlier_summary", ingest_date))
    seconds["summary"] = time.perf_counter() - clock
    by_method = dict.fromkeys(OUTLIER_METHODS, 0)
    for row in outliers.groupBy("method").count().collect():  # one row per method
        by_method[row["method"]] = row["count"]
    outliers.unpersist()

    stats = {
        "stage": STAGE,
        "dates": dates,
        "history_days": history_days,
        "run_id": run_id,
        "flagged_rows": flagged.num_rows,
        "flagged_transactions": len(set(flagged.column("transaction_id").to_pylist())),
        "by_method": by_method,
        "delta_version": merged["version"],
        "inserted": merged.get("num_target_rows_inserted", 0),
        "updated": merged.get("num_target_rows_updated", 0),
        "deleted": merged.get("num_target_rows_deleted", 0),
        "merge_ms": merged.get("execution_time_ms", 0),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    print(f"{STAGE} {ingest_date}: {flagged.num_rows} outlier rows for {dates or 'no dates'}; "
          f"delta version {merged['version']} (+{stats['inserted']} ~{stats['updated']} -{stats['deleted']})")
    write_stats(spark, lake.root, ingest_date, STAGE, stats)
    rt.finish()


if __name__ == "__main__":
    run_stage(main)
