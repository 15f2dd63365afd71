"""Quality gate stage: validate the day with the GX suites in expectations/.

    quality_gate.py --JOB_NAME quality_gate --lake_root ROOT --ingest_date YYYY-MM-DD
        [--suites transactions_contract,transactions_business,transactions_day] [--data_docs true]
        [--expectations_root DIR_OR_S3_URI]

The contract and business suites validate the staged transactions; the day suite validates
the day profile (fluxo.quality.day: one row per source from standardize's stats documents of
this day and the previous days of the suite's window). Writes `quality/ingest_date=D/validation.json`
(run totals + `results`, one record per expectation) and the stage stats, builds GX Data Docs
into `quality/data_docs` (on an S3 lake: built locally, then uploaded), and fails the run
(FLUXO_ERROR naming every failed critical expectation, and for the day rules the offending
sources) when any critical rule fails. Warnings are recorded and never fail the run.
"""

from __future__ import annotations

import json
import os

from fluxo import storage
from fluxo.glue_runtime import read_stats, run_stage, start_stage, write_stats
from fluxo.lake import DATA_DOCS
from fluxo.quality import DEFAULT_SUITES, describe_failure, import_gx_in_background, load_suites, validate
from fluxo.quality.day import PROFILE, PROFILE_SCHEMA, history_window, profile_rows, recent_stats_paths
from fluxo.quality.gate import RESULTS_STORE, STAGED
from fluxo.quality.suites import EXPECTATIONS_DIR

STAGE = "quality_gate"


def main() -> None:
    rt = start_stage(
        ["lake_root", "ingest_date"],
        {"suites": ",".join(DEFAULT_SUITES), "data_docs": "true", "expectations_root": str(EXPECTATIONS_DIR)},
    )
    spark, lake, ingest_date = rt.spark, rt.lake, rt.args["ingest_date"]
    import_gx_in_background()  # the checkpoint runs last; the import overlaps the Spark work
    # Cached by the stage, so it is released when the stage ends (GX does not persist it: on a
    # shared Spark server its cache outlived the stage), and filled while GX imports.
    staged = rt.persist(spark.read.parquet(lake.staged(ingest_date)))
    staged.count()
    names = [name.strip() for name in rt.args["suites"].split(",") if name.strip()]
    suites = load_suites(names, rt.args["expectations_root"])

    window_days, min_days = history_window(suites)
    history_paths = recent_stats_paths(storage.list_files(lake.work("stats"), ("standardize.json",)), ingest_date, window_days)
    history = [json.loads(storage.read_text(path) or "{}") for path in history_paths]
    profile = profile_rows(read_stats(spark, lake.root, ingest_date, "standardize"), history, min_days)
    frames = {STAGED: staged, PROFILE: spark.createDataFrame(profile, PROFILE_SCHEMA)}

    if rt.args["data_docs"].lower() == "true":
        # GX writes Data Docs to local files: on an S3 lake they are built in a copy and uploaded
        with storage.local_copy(lake.quality_root, (DATA_DOCS, RESULTS_STORE)) as quality_dir:
            report = validate(frames, suites, os.path.join(quality_dir, DATA_DOCS), run_name=f"ingest_date={ingest_date}")
        report.data_docs_index = f"{lake.data_docs}/index.html"
    else:
        report = validate(frames, suites, None, run_name=f"ingest_date={ingest_date}")

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
