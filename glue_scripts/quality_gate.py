"""Quality gate stage: validate the day's staged transactions with the GX suites in expectations/.

    quality_gate.py --JOB_NAME quality_gate --lake_root ROOT --ingest_date YYYY-MM-DD
        [--suites transactions_contract,transactions_business] [--data_docs true]
        [--expectations_root DIR_OR_S3_URI]

Writes `quality/ingest_date=D/validation.json` (run totals + `results`, one record per
expectation) and the stage stats, builds GX Data Docs into `quality/data_docs` when the
lake is a local path, and fails the run (FLUXO_ERROR naming every failed critical
expectation) when any critical rule fails. Warnings are recorded and never fail the run.
"""

from __future__ import annotations

import json

from fluxo.glue_runtime import read_text, run_stage, start_stage, write_stats, write_text
from fluxo.quality import DEFAULT_SUITES, describe_failure, load_suites, validate
from fluxo.quality.suites import EXPECTATIONS_DIR

STAGE = "quality_gate"


def main() -> None:
    rt = start_stage(
        ["lake_root", "ingest_date"],
        {"suites": ",".join(DEFAULT_SUITES), "data_docs": "true", "expectations_root": str(EXPECTATIONS_DIR)},
    )
    spark, lake, ingest_date = rt.spark, rt.lake, rt.args["ingest_date"]
    names = [name.strip() for name in rt.args["suites"].split(",") if name.strip()]
    suites = load_suites(names, rt.args["expectations_root"], lambda path: read_text(spark, path))

    data_docs_dir = None
    if rt.args["data_docs"].lower() == "true":
        if "://" in lake.root and not lake.root.startswith("file://"):
            print(f"Data Docs skipped: the lake {lake.root} is not a local path")
        else:
            data_docs_dir = lake.data_docs.removeprefix("file://")

    report = validate(
        spark.read.parquet(lake.staged(ingest_date)), suites, data_docs_dir, run_name=f"ingest_date={ingest_date}"
    )

    # Recorded before judging, so a stopped run still leaves its results for the audit.
    write_text(spark, f"{lake.quality(ingest_date)}/validation.json",
               json.dumps(report.document(ingest_date), indent=2, default=str))
    write_stats(spark, lake.root, ingest_date, STAGE, report.stats())
    for warning in report.warnings:
        print(describe_failure(warning))
    print(
        f"{STAGE} {ingest_date}: {report.rows} rows, {len(report.records)} expectations, "
        f"{len(report.critical_failures)} critical and {len(report.warnings)} warnings failed "
        f"in {report.seconds:.1f} s" + (f"; Data Docs {report.data_docs_index}" if report.data_docs_index else "")
    )
    report.raise_for_critical()
    rt.finish()


if __name__ == "__main__":
    run_stage(main)
