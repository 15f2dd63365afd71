"""Outliers stage at scale: Glue script wall time over N curated rows (its Delta MERGE timed inside),
a DuckDB reference for the group statistics, and recall / false positives against the generator's truth.

    .venv/bin/python bench/outliers_bench.py [--rows 1000000] [--days 10]

The generator's truth (canonical rows + labels) becomes the curated Delta table (event_date
partitions), and the script scores every day of it (`--event_dates`), so all N rows are scored
against baselines over the same N rows. Then:
- the script (own JVM, like a Glue run) first run into an empty Delta table, then a rerun (a MERGE
  that changes nothing); its results document times detection, summary and the Delta MERGE;
- DuckDB (bench-only reference): quartiles + MAD of ln(amount) per (mcc, currency) and the MAD
  flags on the same Parquet;
- recall of planted outliers (truth.is_outlier) and the false-positive rate on normal rows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402
import pyarrow.dataset as ds  # noqa: E402

from deltalake import write_deltalake  # noqa: E402

from fluxo.contract import OUTLIER_METHODS  # noqa: E402
from fluxo_dev.generator import generate  # noqa: E402
from _common import curated_from_truth, run_glue_script  # noqa: E402
from fluxo.lake import Lake  # noqa: E402
from fluxo_platform.lakefs import read_outliers  # noqa: E402

INGEST_DATE = "2026-12-31"


def build_lake(root: Path, rows: int, days: int) -> tuple[pa.Table, list[str]]:
    """The curated Delta table from the generator's truth; returns the truth labels and its days."""
    started = time.perf_counter()
    # Single-source truth holds about half of rows_per_day (the rest would arrive by other sources).
    generate(root / "gen", date(2026, 11, 1), days=days, rows_per_day=rows * 22 // (10 * days), seed=5,
             sources=("s3",), token_salt="bench")
    truth = ds.dataset(root / "gen" / "truth", format="parquet").to_table().slice(0, rows)
    curated = curated_from_truth(truth, datetime(2026, 12, 31, tzinfo=timezone.utc))
    lake = Lake(str(root / "lake"))
    write_deltalake(lake.curated_transactions, curated, partition_by=["event_date"])
    print(f"lake: {curated.num_rows} curated rows over {days} days in {time.perf_counter() - started:.1f} s (generate + write)")
    event_dates = sorted({d.isoformat() for d in curated.column("event_date").unique().to_pylist()})
    return truth.select(["transaction_id", "is_outlier", "fraud_pattern"]), event_dates


def run_script(root: Path, label: str, event_dates: list[str]) -> dict:
    elapsed, stats = run_glue_script("outliers", root / "lake", INGEST_DATE, "--history_days", "0",
                                     "--event_dates", ",".join(event_dates))
    print(f"script {label}: {elapsed:.1f} s wall (JVM start included), {stats['flagged_rows']} flagged rows "
          f"{stats['by_method']}, seconds {stats['seconds']} (+{stats['inserted']} ~{stats['updated']} -{stats['deleted']})")
    return stats


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
    found = read_outliers(Lake(str(root / "lake")).outlier_history)
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
        labels, days = build_lake(root, args.rows, args.days)
        run_script(root, "first run", days)
        run_script(root, "rerun", days)
        duckdb_reference(root)
        quality(root, labels)


if __name__ == "__main__":
    main()
