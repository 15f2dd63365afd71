"""Wall time of the quality gate (every suite, GX 1.x Checkpoint, SUMMARY) on synthetic staged Parquet.

    .venv/bin/python bench/quality_bench.py [--rows 1000000] [--data-docs]

Prints one line per measurement; the staged Parquet is written to a temporary folder first,
so the gate reads files the way the Glue script does. The day suite gets the day profile of a
single s3 source that read every row (no history: its volume rules have no norm to compare).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fluxo.quality import load_suites, validate  # noqa: E402
from fluxo.quality.day import PROFILE, PROFILE_SCHEMA, profile_rows  # noqa: E402
from fluxo.quality.gate import STAGED  # noqa: E402
from fluxo.quality.sample import synthetic_transactions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data-docs", action="store_true", help="also build Data Docs (into the temp folder)")
    args = parser.parse_args()

    from pyspark import StorageLevel
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    suites = load_suites()
    with tempfile.TemporaryDirectory(prefix="fluxo-quality-bench-") as tmp:
        staged = f"{tmp}/staged"
        started = time.perf_counter()
        synthetic_transactions(spark, args.rows).write.parquet(staged)
        print(f"synthesize+write {args.rows} rows: {time.perf_counter() - started:.1f} s")
        # cached as the gate caches it (GX's datasource does not persist)
        df = spark.read.parquet(staged).persist(StorageLevel.MEMORY_AND_DISK)
        today = {"by_source": {"s3": {"read": args.rows, "staged": args.rows, "quarantined": 0}}}
        frames = {STAGED: df, PROFILE: spark.createDataFrame(profile_rows(today, []), PROFILE_SCHEMA)}
        docs = f"{tmp}/data_docs" if args.data_docs else None
        for attempt in ("first (cold GX/Spark)", "second (warm)"):
            started = time.perf_counter()
            report = validate(frames, suites, data_docs_dir=docs)
            elapsed = time.perf_counter() - started
            print(
                f"validate {attempt}: {elapsed:.1f} s wall, {report.rows} rows, {len(report.records)} expectations, "
                f"{len(report.critical_failures)} critical / {len(report.warnings)} warnings failed"
            )
    spark.stop()


if __name__ == "__main__":
    main()
