"""Curate stage: merge the day's staged rows into the curated Delta table (one row per transaction_id).

    curate.py --JOB_NAME curate --lake_root ROOT --ingest_date YYYY-MM-DD [--run_id ID]

Reads work/standardized/ingest_date=D/ and MERGEs it into the event dates it touches of
the Delta table curated/transactions, in one commit (rule in fluxo.transforms.curate);
rerunning the day changes nothing. Stats: work/stats/ingest_date=D/curate.json, with the
table version the later stages read.
"""

from __future__ import annotations

from fluxo import delta_tables
from fluxo.glue_runtime import run_stage, start_stage, write_stats
from fluxo.transforms._common import touched_event_dates
from fluxo.transforms.curate import curate_stats, merge_staged, read_staged

STAGE = "curate"


def main() -> None:
    rt = start_stage(["lake_root", "ingest_date"], {"run_id": None, "JOB_RUN_ID": None})
    spark, lake = rt.spark, rt.lake
    ingest_date = rt.args["ingest_date"]
    run_id = rt.args["run_id"] or rt.args["JOB_RUN_ID"] or f"{STAGE}-{ingest_date}"

    staged = read_staged(spark, lake.staged(ingest_date), ingest_date)
    dates = touched_event_dates(staged)
    commit_info = {"stage": STAGE, "ingest_date": ingest_date, "run_id": run_id}
    merged = delta_tables.with_retry(lambda: merge_staged(spark, lake.curated_transactions, staged, dates, commit_info))
    stats = curate_stats(merged, dates)
    print(f"{STAGE} {ingest_date}: days {dates or 'none'}: {stats['curated_new']} new, "
          f"{stats['already_curated']} already curated ({stats['replaced']} replaced); table version {stats['version']}")
    write_stats(spark, lake.root, ingest_date, STAGE, stats)
    rt.finish()


if __name__ == "__main__":
    run_stage(main)
