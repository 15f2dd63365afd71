"""Outliers stage: robust-statistics outliers of the event dates a run touched, into the Delta history.

    outliers.py --JOB_NAME outliers --lake_root ROOT --ingest_date YYYY-MM-DD
                [--history_days 30] [--run_id ID] [--event_dates D1,D2 --curated_version N]

The event dates are the days curate merged for the ingest date, or --event_dates (like
aggregate). Baselines are computed over the curated days from (earliest touched date − history_days) to the
latest touched date; the touched dates are scored (methods in fluxo.transforms.outliers).
The flagged rows are MERGEd by Spark into the Delta table Lake.outlier_history on
(transaction_id, method) — rule in fluxo.history — so a rerun adds nothing. The day's
summary (per event_date × method × mcc) overwrites work/metrics/outlier_summary/ingest_date=D/.
Stats: work/stats/ingest_date=D/outliers.json.

The curated rows are read as of the table version curate committed (its results document,
or --curated_version), so the stage sees one snapshot.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone

from pyspark.sql import functions as F

from fluxo import delta_tables, history
from fluxo.contract import OUTLIER_METHODS
from fluxo.glue_runtime import curated_input, run_stage, start_stage, write_stats
from fluxo.transforms.curate import read_days
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
    rt = start_stage(
        ["lake_root", "ingest_date"],
        {"history_days": "30", "run_id": None, "JOB_RUN_ID": None, "event_dates": None, "curated_version": None},
    )
    spark, lake = rt.spark, rt.lake
    ingest_date = rt.args["ingest_date"]
    history_days = int(rt.args["history_days"])
    if history_days < 0:
        raise ValueError("--history_days must be >= 0")
    run_id = rt.args["run_id"] or rt.args["JOB_RUN_ID"] or f"{STAGE}-{ingest_date}"
    detected_at = datetime.now(timezone.utc).replace(microsecond=0)

    dates, version = curated_input(rt)
    window = history_window(dates, history_days)
    window_rows = read_days(spark, lake.curated_transactions, window, version, with_partition=True)
    # a filter on the table's event_date reads only the candidate days' partitions
    candidates = window_rows.where(F.col("event_date").isin([date.fromisoformat(d) for d in dates]))
    outliers = rt.persist(detect(candidates.drop("event_date"), window_rows.drop("event_date"), run_id, detected_at))

    clock = time.perf_counter()
    counts = outliers.agg(  # one job: the rows per method and the transactions flagged
        *[F.count(F.when(F.col("method") == m, 1)).alias(m) for m in OUTLIER_METHODS],
        F.count_distinct("transaction_id").alias("_transactions"),
    ).collect()[0]
    by_method = {m: counts[m] for m in OUTLIER_METHODS}
    flagged_transactions = counts["_transactions"]
    seconds = {"detect": time.perf_counter() - clock}
    clock = time.perf_counter()
    commit_info = {"stage": STAGE, "ingest_date": ingest_date, "run_id": run_id}
    merged = delta_tables.with_retry(
        lambda: history.merge_flagged(spark, lake.outlier_history, outliers, dates, commit_info)
    )
    seconds["delta_merge"] = time.perf_counter() - clock
    clock = time.perf_counter()
    outlier_summary(outliers).coalesce(1).write.mode("overwrite").parquet(lake.metrics("outlier_summary", ingest_date))
    seconds["summary"] = time.perf_counter() - clock

    stats = {
        "stage": STAGE,
        "dates": dates,
        "curated_version": version,
        "history_days": history_days,
        "run_id": run_id,
        "flagged_rows": sum(by_method.values()),
        "flagged_transactions": flagged_transactions,
        "by_method": by_method,
        "delta_version": merged["version"],
        "inserted": merged["inserted"],
        "updated": merged["updated"],
        "deleted": merged["deleted"],
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    print(f"{STAGE} {ingest_date}: {stats['flagged_rows']} outlier rows for {dates or 'no dates'}; "
          f"delta version {merged['version']} (+{stats['inserted']} ~{stats['updated']} -{stats['deleted']})")
    write_stats(spark, lake.root, ingest_date, STAGE, stats)
    rt.finish()


if __name__ == "__main__":
    run_stage(main)
