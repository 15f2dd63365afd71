"""Aggregate stage: daily metrics of the event dates a run touched.

    aggregate.py --JOB_NAME aggregate --lake_root ROOT --ingest_date YYYY-MM-DD [--reporting_currency BRL]

The event dates come from work/standardized/ingest_date=D/; their curated partitions are
read in full (the metrics cover every transaction of those days, not only this run's) and
the result overwrites work/metrics/daily/ingest_date=D/. Stats:
work/stats/ingest_date=D/aggregate.json.
"""

from __future__ import annotations

from fluxo.glue_runtime import run_stage, start_stage, write_stats
from fluxo.transforms._common import touched_event_dates
from fluxo.transforms.aggregate import daily_metrics
from fluxo.transforms.curate import read_partitions, read_staged

STAGE = "aggregate"


def main() -> None:
    rt = start_stage(["lake_root", "ingest_date"], {"reporting_currency": "BRL"})
    spark, lake = rt.spark, rt.lake
    ingest_date = rt.args["ingest_date"]
    dates = touched_event_dates(read_staged(spark, lake.staged(ingest_date), ingest_date))

    curated = read_partitions(spark, lake.curated_transactions, dates)
    metrics = daily_metrics(curated, rt.args["reporting_currency"].upper()).cache()
    metric_rows = metrics.count()  # one row per date: caching it is free
    metrics.coalesce(1).write.mode("overwrite").parquet(lake.metrics("daily", ingest_date))
    write_stats(spark, lake.root, ingest_date, STAGE, {"stage": STAGE, "metric_rows": metric_rows, "dates": dates})
    rt.finish()


if __name__ == "__main__":
    run_stage(main)
