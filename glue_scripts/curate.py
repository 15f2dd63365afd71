"""Curate stage: merge the day's staged rows into curated/transactions (one row per transaction_id).

    curate.py --JOB_NAME curate --lake_root ROOT --ingest_date YYYY-MM-DD

Finishes or discards what an earlier failed run left (`recover`), reads
work/standardized/ingest_date=D/ and the curated event_date partitions it touches,
keeps one row per transaction_id (rule in fluxo.transforms.curate) and replaces only
those partitions, all or nothing across failures (`replace_partitions`: staging
folder, journal as the commit point, idempotent install). Rerunning the day rewrites
the same rows. Stats: work/stats/ingest_date=D/curate.json.

FLUXO_FAULT_CURATE=before_commit | after_partitions:N makes the run fail on purpose
mid-write (failure drills and tests).
"""

from __future__ import annotations

import os

from pyspark import StorageLevel

from fluxo.glue_runtime import run_stage, start_stage, write_stats
from fluxo.transforms._common import touched_event_dates
from fluxo.transforms.curate import curate_stats, merge, read_partitions, read_staged, recover, replace_partitions

STAGE = "curate"


def main() -> None:
    rt = start_stage(["lake_root", "ingest_date"])
    spark, lake = rt.spark, rt.lake
    ingest_date = rt.args["ingest_date"]
    work_root = lake.work(STAGE)
    recovered = recover(spark, lake.curated_transactions, work_root)
    if recovered["finished"] or recovered["discarded"]:
        print(f"{STAGE}: finished runs {recovered['finished']}, discarded staging {recovered['discarded']}")

    staged = read_staged(spark, lake.staged(ingest_date), ingest_date)
    dates = touched_event_dates(staged)
    merged = merge(staged, read_partitions(spark, lake.curated_transactions, dates))
    merged.ranked.persist(StorageLevel.MEMORY_AND_DISK)
    stats = curate_stats(merged.ranked, dates)
    if dates:
        replace_partitions(
            spark, merged.curated, lake.curated_transactions, work_root, dates,
            fault=os.environ.get("FLUXO_FAULT_CURATE") or None,
        )
    merged.ranked.unpersist()
    print(f"{STAGE} {ingest_date}: partitions {dates or 'none'} now hold {stats['new_rows']} new rows")
    write_stats(spark, lake.root, ingest_date, STAGE, stats)
    rt.finish()


if __name__ == "__main__":
    run_stage(main)
