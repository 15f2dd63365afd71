"""Standardize stage: the day's raw s3 exports -> staged canonical rows + quarantine.

    standardize.py --JOB_NAME standardize --lake_root ROOT --ingest_date YYYY-MM-DD --batch_id ID
        [--reporting_currency BRL] [--token_salt SALT] [--fx_rates_path PATH]

Reads every *.csv, *.csv.gz, *.jsonl, *.json under raw/s3/ingest_date=D/ (all batches),
overwrites work/standardized/ingest_date=D/ and quarantine/ingest_date=D/stage=standardize/,
and writes work/stats/ingest_date=D/standardize.json. `--batch_id` is the lineage of rows
whose file is not under a `batch=` folder. No input files: empty outputs, zero stats.
"""

from __future__ import annotations

from pyspark import StorageLevel

from fluxo.glue_runtime import list_files, run_stage, start_stage, write_stats
from fluxo.tokenize import token_salt
from fluxo.transforms.standardize import (
    CSV_SUFFIXES,
    JSON_SUFFIXES,
    load_fx_rates,
    map_s3,
    read_lines,
    standardize,
    standardize_stats,
)

STAGE = "standardize"


def main() -> None:
    rt = start_stage(
        ["lake_root", "ingest_date", "batch_id"],
        {"reporting_currency": "BRL", "token_salt": None, "fx_rates_path": None},
    )
    spark, lake, args = rt.spark, rt.lake, rt.args
    ingest_date = args["ingest_date"]
    raw = lake.raw("s3", ingest_date)
    csv_files = list_files(spark, raw, CSV_SUFFIXES)
    json_files = list_files(spark, raw, JSON_SUFFIXES)
    print(f"{STAGE} {ingest_date}: {len(csv_files)} CSV and {len(json_files)} JSON files under {raw}")

    candidates = map_s3(read_lines(spark, csv_files), read_lines(spark, json_files), args["batch_id"])
    out = standardize(
        candidates,
        load_fx_rates(spark, args["fx_rates_path"]),
        reporting_currency=args["reporting_currency"].upper(),
        token_salt=args["token_salt"] or token_salt(),
    )
    out.checked.persist(StorageLevel.MEMORY_AND_DISK)  # staged, quarantine and stats reuse one read
    stats = standardize_stats(out.checked)
    out.staged.write.mode("overwrite").parquet(lake.staged(ingest_date))
    out.quarantine.write.mode("overwrite").parquet(lake.quarantine(ingest_date, STAGE))
    out.checked.unpersist()

    write_stats(spark, lake.root, ingest_date, STAGE, stats)
    rt.finish()


if __name__ == "__main__":
    run_stage(main)
