"""Curate stage: merge the day's staged rows into curated/transactions (one row per transaction_id).

    curate.py --JOB_NAME curate --lake_root ROOT --ingest_date YYYY-MM-DD

Reads work/standardized/ingest_date=D/ and the curated event_date partitions it touches,
keeps one row per transaction_id (rule in fluxo.transforms.curate), materialises the
result in work/curate/ingest_date=D/ and replaces only those partitions (dynamic
partition overwrite). Rerunning the day rewrites the same rows. Stats:
work/stats/ingest_date=D/curate.json.
"""

from __future__ import annotations

from pyspark import StorageLevel

from fluxo.glue_runtime import run_stage, start_stage, write_stats
from fluxo.transforms._common import touched_event_dates
from fluxo.transforms.curate import PARTITION_COLUMN, curate_stats, merge, read_partitions, read_staged

STAGE = "curate"


def main() -> None:
    rt = start_stage(["lake_root", "ingest_date"])
    spark, lake = rt.spark, rt.lake
    ingest_date = rt.args["ingest_date"]
    staged = read_staged(spark, lake.staged(ingest_date), ingest_date)
    dates = touched_event_dates(staged)

    merged = merge(staged, read_partitions(spark, lake.curated_transactions, dates))
    merged.ranked.persist(StorageLevel.MEMORY_AND_DISK)
    stats = curate_stats(merged.ranked, dates)

    if dates:
        # The merged rows come from the partitions about to be replaced: write them to a
        # work folder first, then copy that folder over the touched partitions.
        work = lake.work(STAGE, f"ingest_date={ingest_date}")
        merged.curated.repartition(PARTITION_COLUMN).write.mode("overwrite").partitionBy(PARTITION_COLUMN).parquet(
            work
        )
        merged.ranked.unpersist()
        (
            spark.read.parquet(work)
            .write.mode("overwrite")
            .option("partitionOverwriteMode", "dynamic")
            .partitionBy(PARTITION_COLUMN)
            .parquet(lake.curated_transactions)
        )
    print(f"{STAGE} {ingest_date}: partitions {dates or 'none'} now hold {stats['new_rows']} new rows")
    write_stats(spark, lake.root, ingest_date, STAGE, stats)
    rt.finish()


if __name__ == "__main__":
    run_stage(main)
