"""Standardize stage: the day's raw files of every source -> staged canonical rows + quarantine.

    standardize.py --JOB_NAME standardize --lake_root ROOT --ingest_date YYYY-MM-DD
        [--batch_id ID] [--reporting_currency BRL] [--fx_rates_path PATH]

The card-token salt is the secret FLUXO_TOKEN_SALT in the job's environment (never an argument).

Reads every batch under raw/<source>/ingest_date=D/ for each source
(docs/source-formats.md): s3 *.csv[.gz], *.jsonl[.gz], *.json[.gz]; api page-*.json;
db part-*.csv; kafka *.jsonl envelopes. A source without files that day is skipped.
Overwrites work/standardized/ingest_date=D/ and quarantine/ingest_date=D/stage=standardize/,
and writes work/stats/ingest_date=D/standardize.json. Rows carry the batch of their
`batch=` folder; `--batch_id` (default: `ingest-D`) is only the lineage of a file
outside one. No input files: empty outputs, zero stats.
"""

from __future__ import annotations

from fluxo import storage
from fluxo.glue_runtime import run_stage, start_stage, write_stats
from fluxo.tokenize import token_salt
from fluxo.transforms.standardize import (
    load_fx_rates,
    map_raw_day,
    outputs,
    raw_day_files,
    standardize,
    standardize_stats,
)

STAGE = "standardize"


def main() -> None:
    rt = start_stage(
        ["lake_root", "ingest_date"],
        {"batch_id": None, "reporting_currency": "BRL", "fx_rates_path": None},
    )
    spark, lake, args = rt.spark, rt.lake, rt.args
    ingest_date = args["ingest_date"]
    files = raw_day_files(storage.list_files, lake, ingest_date)
    print(f"{STAGE} {ingest_date}: " + ", ".join(f"{len(v)} {k} files" for k, v in files.items()))

    candidates = map_raw_day(spark, files, args["batch_id"] or f"ingest-{ingest_date}")
    out = standardize(
        candidates,
        load_fx_rates(spark, args["fx_rates_path"]),
        reporting_currency=args["reporting_currency"].upper(),
        token_salt=token_salt(),
    )
    out = outputs(rt.persist(out.checked))  # staged, quarantine and stats reuse one read
    stats = standardize_stats(out.checked)
    out.staged.write.mode("overwrite").parquet(lake.staged(ingest_date))
    out.quarantine.write.mode("overwrite").parquet(lake.quarantine(ingest_date, STAGE))

    write_stats(spark, lake.root, ingest_date, STAGE, stats)
    rt.finish()


if __name__ == "__main__":
    run_stage(main)
