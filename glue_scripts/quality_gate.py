"""Quality gate stage: validate the day's staged transactions with the GX suites in expectations/.

    quality_gate.py --JOB_NAME quality_gate --lake_root ROOT --ingest_date YYYY-MM-DD
        [--suites transactions_contract,transactions_business] [--data_docs true]
        [--expectations_root DIR_OR_S3_URI]

Writes `quality/ingest_date=D/validation.json` (run totals + `results`, one record per
expectation) and the stage stats, builds GX Data Docs into `quality/data_docs` (on an S3
lake: built locally, then uploaded), and fails the run (FLUXO_ERROR naming every failed critical
expectation) when any critical rule fails. Warnings are recorded and never fail the run.
"""

from __future__ import annotations

import json
import os

from fluxo import storage
from fluxo.glue_runtime import run_stage, start_stage, write_stats
from fluxo.lake import DATA_DOCS
from fluxo.quality import DEFAULT_SUITES, describe_failure, load_suites, validate
from fluxo.quality.gate import RESULTS_STORE
from fluxo.quality.suites import EXPECTATIONS_DIR

STAGE = "quality_gate"


def main() -> None:
    rt = start_stage(
        ["lake_root", "ingest_date"],
        {"suites": ",".join(DEFAULT_SUITES), "data_docs": "true", "expectations_root": str(EXPECTATIONS_DIR)},
    )
    spark, lake, ingest_date = rt.spark, rt.lake, rt.args["ingest_date"]
    names = [name.strip() for name in rt.args["suites"].split(",") if name.strip()]
    suites = load_suites(names, rt.args["expectations_root"])

    staged = spark.read.parquet(lake.staged(ingest_date))
    if rt.args["data_docs"].lower() == "true":
        # GX writes Data Docs to local files: on an S3 lake they are built in a copy and uploaded
        with storage.local_copy(lake.quality_root, (DATA_DOCS, RESULTS_STORE)) as quality_dir:
            report = validate(staged, suites, os.path.join(quality_dir, DATA_DOCS), run_name=f"ingest_date={ingest_date}")
        report.data_docs_index = f"{lake.data_docs}/index.html"
    else:
        report = validate(staged, suites, None, run_name=f"ingest_date={ingest_date}")

    # Recorded before judging, so a stopped run still leaves its results for the audit.
    storage.write_text(f"{lake.quality(ingest_date)}/validation.json",
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
