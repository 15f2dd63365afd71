"""Quality gate stage: validate the day's staged transactions with the GX suites in expectations/.

    quality_gate.py --JOB_NAME quality_gate --lake_root ROOT --ingest_date YYYY-MM-DD
        [--suites transactions_contract,transactions_business] [--data_docs true]

Writes `quality/ingest_date=D/validation.json` (one record per expectation) and the
stage stats, builds Data Docs when the lake is a local path, and fails the run
(FLUXO_ERROR naming every failed critical expectation) when any critical rule fails.
Warnings are recorded and never fail the run.
"""

from __future__ import annotations

from fluxo.lake import Lake
from fluxo.quality import DEFAULT_SUITES, describe_failure, load_suites, validate
from fluxo.quality._runtime import parse_args, run_stage, spark_session, write_json, write_stats

STAGE = "quality_gate"


def main() -> None:
    args = parse_args(
        ["JOB_NAME", "lake_root", "ingest_date"],
        {"suites": ",".join(DEFAULT_SUITES), "data_docs": "true"},
    )
    lake, ingest_date = Lake(args["lake_root"]), args["ingest_date"]
    suites = load_suites([name.strip() for name in args["suites"].split(",") if name.strip()])

    data_docs_dir = None
    if args["data_docs"].lower() == "true":
        if "://" in lake.root and not lake.root.startswith("file://"):
            print(f"Data Docs skipped: the lake {lake.root} is not a local path")
        else:
            data_docs_dir = lake.data_docs.removeprefix("file://")

    spark = spark_session(f"fluxo-{STAGE}")
    staged = spark.read.parquet(lake.staged(ingest_date))
    report = validate(staged, suites, data_docs_dir=data_docs_dir)

    write_json(f"{lake.quality(ingest_date)}/validation.json", report.document(ingest_date))
    write_stats(lake.root, ingest_date, STAGE, report.stats())
    for warning in report.warnings:
        print(describe_failure(warning))
    print(
        f"{STAGE} {ingest_date}: {report.rows} rows, {len(report.records)} expectations, "
        f"{len(report.critical_failures)} critical and {len(report.warnings)} warnings failed "
        f"in {report.seconds:.1f} s" + (f"; Data Docs {report.data_docs_index}" if report.data_docs_index else "")
    )
    report.raise_for_critical()


if __name__ == "__main__":
    run_stage(main)
