"""Outliers stage at scale: Glue script wall time over N curated rows, Delta MERGE times, a DuckDB
reference for the group statistics, and recall / false positives against the generator's truth.

    .venv/bin/python bench/outliers_bench.py [--rows 1000000] [--days 10]

The generator's truth (canonical rows + labels) becomes a curated lake (event_date partitions)
and the staged folder of one ingest date touching every day, so the script scores all N rows
against baselines over the same N rows. Then:
- the script (own JVM, like a Glue run) first run into an empty Delta table, then a rerun (no-op MERGE);
- delta-rs MERGE alone: N flagged rows into an empty table, the same rows again, and a 10% change;
- DuckDB (bench-only reference): quartiles + MAD of ln(amount) per (mcc, currency) and the MAD
  flags on the same Parquet;
- recall of planted outliers (truth.is_outlier) and the false-positive rate on normal rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.dataset as ds  # noqa: E402

from fluxo import history  # noqa: E402
from fluxo.contract import OUTLIER_METHODS  # noqa: E402
from fluxo_dev.generator import generate  # noqa: E402
from _common import curated_from_truth  # noqa: E402
from fluxo.lake import Lake  # noqa: E402

INGEST_DATE = "2026-12-31"


def build_lake(root: Path, rows: int, days: int) -> pa.Table:
    """Curated partitions + one staged batch from the generator's truth; returns the truth labels."""
    started = time.perf_counter()
    # Single-source truth holds about half of rows_per_day (the rest would arrive by other sources).
    generate(root / "gen", date(2026, 11, 1), days=days, rows_per_day=rows * 22 // (10 * days), seed=5,
             sources=("s3",), token_salt="bench")
    truth = ds.dataset(root / "gen" / "truth", format="parquet").to_table().slice(0, rows)
    curated = curated_from_truth(truth, datetime(2026, 12, 31, tzinfo=timezone.utc))
    lake = Lake(str(root / "lake"))
    ds.write_dataset(curated, lake.curated_transactions, format="parquet",
                     partitioning=ds.partitioning(pa.schema([("event_date", pa.date32())]), flavor="hive"))
    ds.write_dataset(curated.drop_columns(["event_date"]), lake.staged(INGEST_DATE), format="parquet")
    print(f"lake: {curated.num_rows} curated rows over {days} days in {time.perf_counter() - started:.1f} s (generate + write)")
    return truth.select(["transaction_id", "is_outlier", "fraud_pattern"])


def run_script(root: Path, label: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), FLUXO_SPARK_MASTER="local[2]", FLUXO_SPARK_DRIVER_MEMORY="4g",
               FLUXO_SPARK_SHUFFLE_PARTITIONS="8")
    env.pop("PYSPARK_GATEWAY_PORT", None)
    argv = [sys.executable, str(REPO / "glue_scripts" / "outliers.py"), "--JOB_NAME", "outliers",
            "--lake_root", str(root / "lake"), "--ingest_date", INGEST_DATE, "--history_days", "0",
            "--run_id", "bench"]
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    stats = json.loads((root / "lake" / "work" / "stats" / f"ingest_date={INGEST_DATE}" / "outliers.json").read_text())
    print(f"script {label}: {elapsed:.1f} s wall (JVM start included), {stats['flagged_rows']} flagged rows "
          f"{stats['by_method']}, merge {stats['merge_ms']} ms (+{stats['inserted']} ~{stats['updated']} -{stats['deleted']})")
    return stats


def merge_bench(root: Path, flagged: pa.Table) -> None:
    uri = str(root / "merge-bench")
    dates = sorted({d.isoformat() for d in flagged.column("event_date").to_pylist()})
    for label, rows in (("into empty table", flagged), ("same rows again", flagged)):
        started = time.perf_counter()
        m = history.merge_outliers(uri, rows, dates)
        print(f"delta merge {label}: {flagged.num_rows} rows in {time.perf_counter() - started:.2f} s "
              f"(+{m['num_target_rows_inserted']} ~{m['num_target_rows_updated']} -{m['num_target_rows_deleted']})")
    changed = pc.if_else(
        pc.equal(pc.bit_wise_and(pa.array(range(flagged.num_rows)), 9), 0),
        pc.add(flagged.column("score"), 1.0), flagged.column("score"),
    )
    rows = flagged.set_column(flagged.schema.get_field_index("score"), "score", changed)
    started = time.perf_counter()
    m = history.merge_outliers(uri, rows, dates)
    print(f"delta merge with changed scores: {time.perf_counter() - started:.2f} s "
          f"(+{m['num_target_rows_inserted']} ~{m['num_target_rows_updated']} -{m['num_target_rows_deleted']})")
    started = time.perf_counter()
    result = history.maintain(uri, retention_hours=0)
    print(f"maintain (compact + vacuum 0h): {time.perf_counter() - started:.2f} s, "
          f"{result['files_removed']} files -> {result['files_added']}, {result['vacuumed_files']} vacuumed")


def duckdb_reference(root: Path) -> None:
    import duckdb

    curated = str(root / "lake" / "curated" / "transactions" / "**" / "*.parquet")
    started = time.perf_counter()
    count = duckdb.sql(f"""
        WITH t AS (SELECT transaction_id, mcc, currency, ln(amount::DOUBLE) AS x FROM read_parquet('{curated}')),
        g AS (SELECT mcc, currency, count(*) AS n, median(x) AS med FROM t GROUP BY ALL HAVING count(*) >= 30),
        s AS (SELECT t.mcc, t.currency, median(abs(t.x - g.med)) AS mad, avg(abs(t.x - g.med)) AS mean_ad
              FROM t JOIN g USING (mcc, currency) GROUP BY ALL)
        SELECT count(*) FROM t JOIN g USING (mcc, currency) JOIN s USING (mcc, currency)
        WHERE abs(CASE WHEN mad > 0 THEN 0.6745 * (x - med) / mad ELSE (x - med) / (1.253314 * mean_ad) END) > 3.5
    """).fetchall()[0][0]
    print(f"duckdb reference (MAD method only, exact medians): {time.perf_counter() - started:.2f} s, {count} flagged")


def quality(root: Path, labels: pa.Table) -> None:
    found = history.read_outliers(Lake(str(root / "lake")).outlier_history)
    hits = set(found.column("transaction_id").to_pylist())
    ids = labels.column("transaction_id").to_pylist()
    planted = [t for t, o in zip(ids, labels.column("is_outlier").to_pylist()) if o]
    normal = [t for t, o, f in zip(ids, labels.column("is_outlier").to_pylist(),
                                   labels.column("fraud_pattern").to_pylist()) if not o and f is None]
    recalled = sum(t in hits for t in planted)
    false_pos = sum(t in hits for t in normal)
    print(f"recall: {recalled}/{len(planted)} planted outliers = {recalled / max(1, len(planted)):.1%}; "
          f"false positives: {false_pos}/{len(normal)} normal rows = {false_pos / max(1, len(normal)):.3%}")
    methods = found.column("method").to_pylist()
    for m in OUTLIER_METHODS:
        mine = {t for t, mm in zip(found.column("transaction_id").to_pylist(), methods) if mm == m}
        print(f"  {m}: {len(mine)} flagged, {sum(t in mine for t in planted)} planted, "
              f"{sum(t in mine for t in normal)} normal")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fluxo-outliers-bench-") as tmp:
        root = Path(tmp)
        labels = build_lake(root, args.rows, args.days)
        first = run_script(root, "first run")
        run_script(root, "rerun")
        if first["flagged_rows"]:
            merge_bench(root, history.read_outliers(Lake(str(root / "lake")).outlier_history))
        duckdb_reference(root)
        quality(root, labels)


if __name__ == "__main__":
    main()
