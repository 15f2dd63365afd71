"""Aggregate stage: metrics at every grain of the event dates a run touched.

    aggregate.py --JOB_NAME aggregate --lake_root ROOT --ingest_date YYYY-MM-DD [--reporting_currency BRL]
                 [--event_dates D1,D2 --curated_version N]

The event dates are the days curate merged for the ingest date (or --event_dates), read as of
the table version its commit made; their curated rows are
read once and in full (the metrics cover every transaction of those days, not only this
run's). Each grain of fluxo.contract.METRIC_GRAINS overwrites
work/metrics/<grain>/ingest_date=D/: `daily` from one aggregation, the finer grains
(merchant, MCC, country x channel, hour) from one grouping-sets aggregation.
The fraud-flag counts come from the alerts the fraud stage (which runs before) MERGEd into
the Delta table Lake.fraud_alerts for those dates; without alerts every count is 0.
Stats: work/stats/ingest_date=D/aggregate.json (rows per grain).
"""

from __future__ import annotations

from fluxo.contract import FRAUD_ALERT
from fluxo.glue_runtime import curated_input, run_stage, start_stage, write_stats
from fluxo.transforms.aggregate import (
    GROUPED_GRAINS,
    OBJECT_AGGREGATE_CONF,
    daily_metrics,
    grain_counts,
    grain_metrics,
    grain_rows,
    with_fraud_flags,
)
from fluxo.transforms.curate import read_days

STAGE = "aggregate"
# Output rows per file: metric grains are small (the merchant grain is the largest).
ROWS_PER_FILE = 500_000


def main() -> None:
    rt = start_stage(
        ["lake_root", "ingest_date"], {"reporting_currency": "BRL", "event_dates": None, "curated_version": None},
        conf=OBJECT_AGGREGATE_CONF,
    )
    spark, lake = rt.spark, rt.lake
    ingest_date = rt.args["ingest_date"]
    currency = rt.args["reporting_currency"].upper()
    dates, version = curated_input(rt)

    # Two aggregations read the same partitions: read the Parquet once.
    alerts = read_days(spark, lake.fraud_alerts, dates, contract=FRAUD_ALERT)
    curated = rt.persist(with_fraud_flags(read_days(spark, lake.curated_transactions, dates, version), alerts))
    rows: dict[str, int] = {}
    daily = daily_metrics(curated, currency)
    daily.coalesce(1).write.mode("overwrite").parquet(lake.metrics("daily", ingest_date))
    rows["daily"] = spark.read.parquet(lake.metrics("daily", ingest_date)).count()

    grains = rt.persist(grain_metrics(curated, currency))
    for name in GROUPED_GRAINS:
        grain_rows(grains, name).coalesce(1).write.option("maxRecordsPerFile", ROWS_PER_FILE).mode(
            "overwrite"
        ).parquet(lake.metrics(name, ingest_date))
    rows.update(grain_counts(grains))  # one pass over the kept grains, not a read of each output
    log_rows = ", ".join(f"{name}={n}" for name, n in rows.items())
    print(f"aggregate {ingest_date}: metric rows {log_rows}", flush=True)
    write_stats(spark, lake.root, ingest_date, STAGE,
                {"stage": STAGE, "metric_rows": rows["daily"], "grain_rows": rows, "dates": dates, "curated_version": version})
    rt.finish()


if __name__ == "__main__":
    run_stage(main)
