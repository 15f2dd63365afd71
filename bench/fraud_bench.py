"""Fraud stage at scale: the Glue script over a scored day of N curated rows with 30 days of history,
against DuckDB running the same rules (fluxo_dev.fraud_reference) on the same data, and the alerts
scored against the generator's planted fraud.

    .venv/bin/python bench/fraud_bench.py [--rows 1000000 5000000] [--history-days 30] [--history-share 0.1]
                                          [--spark-remote sc://HOST:PORT]

For each N: the generator's canonical truth (one universe of cards and customers) for the scored
day (N rows) and `--history-days` earlier days of N x `--history-share` rows each becomes a curated
Delta table (written with delta-rs, partitioned by event_date, as curate leaves it). Then:
- the fraud script in its own process, like a Glue run (JVM start included), and the stage's own
  timings (features, Delta MERGE, GX checkpoint) from its results document; with --spark-remote,
  then twice more on that Spark Connect server (FLUXO_SPARK_REMOTE in .fluxo/stack.env after
  `make up`), as the DAG's local stages run: the second of those is the stage on a warm Spark;
- DuckDB: every rule's feature and flag over the same rows, from Parquet files of the same days;
- that both flag the same transactions, and precision / recall per rule against the ground truth.
Prints the cost per scored row of each N relative to the first.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from fluxo.contract import FRAUD_ALERT  # noqa: E402
from fluxo.fraud_rules import load_rules  # noqa: E402
from fluxo.lake import Lake  # noqa: E402
from fluxo_dev.fraud_reference import format_scores, precision_recall, reference_alerts, truth_labels  # noqa: E402
from fluxo_dev.generator import canonical_days  # noqa: E402
from _common import curated_from_truth, run_glue_script  # noqa: E402
from fluxo_platform.lakefs import read_delta  # noqa: E402

DAY = date(2026, 11, 30)
INGEST_DATE = DAY.isoformat()


def build_lake(root: Path, rows: int, history_days: int, history_share: float) -> pa.Table:
    from deltalake import write_deltalake

    started = time.perf_counter()
    days = {DAY - timedelta(days=k): max(200, int(rows * history_share)) for k in range(1, history_days + 1)}
    days[DAY] = rows
    truth = canonical_days(days, seed=7, universe_rows=rows)
    curated = curated_from_truth(truth, datetime(2026, 12, 1, tzinfo=timezone.utc))
    generated = time.perf_counter() - started
    lake = Lake(str(root / "lake"))
    write_deltalake(lake.curated_transactions, curated, partition_by=["event_date"])
    pq.write_table(curated, root / "curated.parquet")
    (root / "lake" / "work" / "stats" / f"ingest_date={INGEST_DATE}").mkdir(parents=True, exist_ok=True)
    print(f"N={rows:,}: {curated.num_rows:,} curated rows ({rows:,} on {DAY}, {len(days) - 1} days of history) "
          f"generated in {generated:.1f} s, written in {time.perf_counter() - started - generated:.1f} s")
    labels = truth.select(["transaction_id", "event_ts", "fraud_pattern", "is_outlier"])
    # at 5M the generated tables are most of this process's ~19 GB: give them back before the stage's JVM starts
    del truth, curated
    pa.default_memory_pool().release_unused()
    return labels


def run_stage(root: Path, spark_remote: str | None = None) -> tuple[float, dict]:
    return run_glue_script("fraud", root / "lake", INGEST_DATE, "--event_dates", INGEST_DATE, "--data_docs", "false",
                           driver_memory="6g", spark_remote=spark_remote)


def stage_line(wall: float, stats: dict, how: str) -> str:
    seconds = stats["seconds"]
    return (f"  fraud stage{how}: {wall:.1f} s wall; inside: features {seconds['features']:.1f} s, "
            f"delta merge {seconds['delta_merge']:.1f} s, "
            f"GX checkpoint {seconds['gx_checkpoint']:.1f} s; {stats['alerts']:,} alerts over {stats['rows']:,} rows")


def stage_alerts(root: Path) -> dict[str, set[str]]:
    """The scored day's alerts as the stage MERGEd them into the alert history (what the warehouse load reads)."""
    table = read_delta(Lake(str(root / "lake")).fraud_alerts, FRAUD_ALERT.arrow_schema(), filters=[("event_date", "=", DAY)])
    return {t: set(r.split(",")) for t, r in zip(table.column("transaction_id").to_pylist(),
                                                   table.column("rules").to_pylist())}


def duckdb_run(root: Path, rules) -> tuple[float, dict[str, set[str]]]:
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"CREATE VIEW source AS SELECT * FROM read_parquet('{root / 'curated.parquet'}')")
    found = reference_alerts(con, [INGEST_DATE], rules)
    return time.perf_counter() - started, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--history-days", type=int, default=30)
    parser.add_argument("--history-share", type=float, default=0.1, help="rows of a history day / N")
    parser.add_argument("--spark-remote", help="also run the stage on this Spark Connect server (sc://HOST:PORT)")
    args = parser.parse_args()
    rules = load_rules()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min)")
    per_row = {}
    for rows in args.rows:
        with tempfile.TemporaryDirectory(prefix="fluxo-fraud-bench-") as tmp:
            root = Path(tmp)
            truth = build_lake(root, rows, args.history_days, args.history_share)
            wall, stats = run_stage(root)
            spark_alerts = stage_alerts(root)
            duck_s, duck_alerts = duckdb_run(root, rules)
            print(stage_line(wall, stats, " (own JVM, start included)"))
            for attempt in ("first", "warm") if args.spark_remote else ():
                remote_wall, remote_stats = run_stage(root, args.spark_remote)
                print(stage_line(remote_wall, remote_stats, f" on {args.spark_remote} ({attempt} run)"))
                assert stage_alerts(root) == spark_alerts, "the Connect run flagged other rows"
            print(f"  duckdb, same rules, same rows: {duck_s:.1f} s; stage / duckdb = {wall / duck_s:.1f}x; "
                  f"same alerts: {spark_alerts == duck_alerts} ({len(duck_alerts):,})")
            labels, outliers = truth_labels(truth, [DAY])
            print("  " + format_scores(precision_recall(spark_alerts, labels, rules.names, outliers)).replace(
                "\n", "\n  "))
            per_row[rows] = wall / rows
    first = args.rows[0]
    for rows in args.rows[1:]:
        print(f"cost per scored row at {rows:,} / at {first:,}: {per_row[rows] / per_row[first]:.2f}")
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
