"""End-to-end benchmark: N generated records through `transactions_etl`, per-stage wall times.

    make bench                      # 1,000,000 records (the s3 source only), one day
    make bench ARGS="--rows 200000"
    make bench ARGS="--rows 20000"   # a demo-sized day: what the fixed costs leave
    make bench ARGS="--rows 20000 --next-day"

After the run the same day runs again with nothing changed: every Glue stage should skip
(`fluxo_glue.rerun`), and the rerun's wall time is printed as a share of the first run's.
The first run is the first work of a Spark server just started (its JVM compiles the stages'
code paths as it goes); `--next-day` also runs the following day's data on the now warm
services, as a deployment's daily run finds them.

The services run in their own home (.fluxo/bench-home) so the demo's data is untouched.
Per-stage times are read from Airflow's own task_instance records of the run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from _common import bench_services, rows_per_day_for
from fluxo_dev.demo import print_fraud_report

AIRFLOW_BIN = Path(sys.executable).parent / "airflow"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="records in the day's S3 files (approximately)")
    parser.add_argument("--day", type=date.fromisoformat, default=date(2026, 11, 20))
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--next-day", action="store_true", help="then run the next day on the warm services")
    args = parser.parse_args()

    # The DAG's log stays in the home; FLUXO_LAKE_ROOT may point the run at another lake (e.g. S3).
    t = time.monotonic()
    with bench_services("bench-home", keep_home=True, lake_root=os.environ.get("FLUXO_LAKE_ROOT")) as home:
        return run(args, home, {"services up": time.monotonic() - t})


def run(args, home: Path, timings: dict[str, float]) -> int:
    # The day is sized in S3 records: the other sources' extract tasks are skipped.
    env = {**os.environ, "FLUXO_SOURCES": "s3"}

    from fluxo_dev.generator import generate, upload_landing
    from fluxo_platform.settings import get_settings
    from fluxo_platform.warehouse import migrate

    get_settings.cache_clear()
    settings = get_settings()
    migrate(settings.database_url)
    subprocess.run([str(AIRFLOW_BIN), "db", "migrate"], env=env, check=True, capture_output=True)

    rows_per_day = rows_per_day_for(args.rows, "s3", home, args.day, args.seed)
    t = time.monotonic()
    generate(home / "generated", args.day, days=1, rows_per_day=rows_per_day, seed=args.seed, sources=("s3",))
    timings["generate (s3 shapes)"] = time.monotonic() - t
    t = time.monotonic()
    upload_landing(home / "generated", [args.day], settings)
    timings["upload to landing bucket"] = time.monotonic() - t

    dag_wall = run_dag(env, args.day, home / "bench-dag.log")
    if dag_wall is None:
        return 1
    stages = task_times(env)
    rerun_wall = run_dag(env, args.day, home / "bench-dag-rerun.log")
    if rerun_wall is None:
        return 1

    if args.next_day:
        next_day = args.day + timedelta(days=1)
        generate(home / "generated-next", next_day, days=1, rows_per_day=rows_per_day, seed=args.seed, sources=("s3",))
        upload_landing(home / "generated-next", [next_day], settings)
        next_wall = run_dag(env, next_day, home / "bench-dag-next.log")
        if next_wall is None:
            return 1
        next_stages = task_times(env)

    import psycopg

    with psycopg.connect(settings.database_url) as conn:
        counts, skipped = conn.execute(
            "SELECT counts, (SELECT count(*) FROM jsonb_each(stages) s WHERE s.value->>'skipped' IS NOT NULL)"
            " FROM audit.pipeline_runs WHERE ingest_date = %s ORDER BY finished_at DESC LIMIT 1",
            (args.day,),
        ).fetchone()

    read = counts.get("stage_stats", {}).get("standardize", {}).get("read", 0)
    print(f"\nfluxo end-to-end benchmark: {read:,} records in the day's S3 files, all read by standardize")
    print(f"{'step':<40}{'seconds':>9}")
    for name, seconds in timings.items():
        print(f"{name:<40}{seconds:>9.1f}")
    for task_id, seconds in stages:
        print(f"{'  dag task ' + task_id:<40}{float(seconds or 0):>9.1f}")
    print(f"{'transactions_etl (airflow dags test)':<40}{dag_wall:>9.1f}")
    print(f"{'rerun of the unchanged day':<40}{rerun_wall:>9.1f}   ({rerun_wall / dag_wall:.2f} of the first run,"
          f" {skipped} stages skipped)")
    print(f"throughput: {read / dag_wall:,.0f} records/s through the whole DAG")
    if args.next_day:
        print(f"\nthe next day ({next_day}) on the warm services")
        for task_id, seconds in next_stages:
            print(f"{'  dag task ' + task_id:<40}{float(seconds or 0):>9.1f}")
        print(f"{'transactions_etl (airflow dags test)':<40}{next_wall:>9.1f}")
    print("fraud alerts against the generator's planted fraud:")
    print_fraud_report(settings.database_url, home / "generated", [args.day])
    return 0


def run_dag(env: dict, day: date, log: Path) -> float | None:
    """Wall seconds of one `airflow dags test` run of the day (None when it failed)."""
    t = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run([str(AIRFLOW_BIN), "dags", "test", "transactions_etl", day.isoformat()],
                              env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        print(f"the DAG run failed; see {log}", file=sys.stderr)
        return None
    return time.monotonic() - t


def task_times(env: dict) -> list[tuple[str, float]]:
    """(task id, seconds) of the latest transactions_etl run, from Airflow's own records."""
    import psycopg

    airflow_url = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg2://", "postgresql://")
    with psycopg.connect(airflow_url) as conn:
        return conn.execute(
            """
            SELECT task_id, extract(epoch FROM end_date - start_date) FROM task_instance
            WHERE dag_id = 'transactions_etl' AND run_id = (
                SELECT run_id FROM dag_run WHERE dag_id = 'transactions_etl' ORDER BY id DESC LIMIT 1)
            ORDER BY start_date
            """
        ).fetchall()


if __name__ == "__main__":
    sys.exit(main())
