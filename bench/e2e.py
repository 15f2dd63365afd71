"""End-to-end benchmark: N generated records through `transactions_etl`, per-stage wall times.

    make bench                      # 1,000,000 records (the s3 source only), one day
    make bench ARGS="--rows 200000"
    make bench ARGS="--rows 20000"   # a demo-sized day: what the fixed costs leave
    make bench ARGS="--rows 20000 --next-day"

After the run the same day runs again with nothing changed: every Glue stage should skip
(`fluxo_glue.rerun`), and the rerun's wall time is printed as a share of the first run's.
The first run is the first work of a Spark server just started (its JVM compiles the stages'
code paths as it goes); `--next-day` also runs the following day's data on the now warm
services, as a deployment's daily run finds them. `--scheduler` runs every DAG run through
Airflow's own scheduler (api-server, scheduler, dag-processor, triggerer of `make airflow`; the
run triggered through the REST API as the UI does) instead of `airflow dags test`, which runs
tasks one at a time: the branches after curate (outliers beside fraud and aggregate) then run
side by side, each task in a process of its own, as a deployment runs them.

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
from fluxo_dev.generator import generate, upload_landing
from fluxo_dev.stack.airflow import metadata_database_url, rest_client
from fluxo_dev.stack.process import wait_for

AIRFLOW_BIN = Path(sys.executable).parent / "airflow"
DAG = "transactions_etl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="records in the day's S3 files (approximately)")
    parser.add_argument("--day", type=date.fromisoformat, default=date(2026, 11, 20))
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--next-day", action="store_true", help="then run the next day on the warm services")
    parser.add_argument("--scheduler", action="store_true",
                        help="run the DAG through Airflow's scheduler (REST trigger) instead of `airflow dags test`")
    args = parser.parse_args()

    # The DAG's log stays in the home; FLUXO_LAKE_ROOT may point the run at another lake (e.g. S3).
    t = time.monotonic()
    with bench_services("bench-home", keep_home=True, lake_root=os.environ.get("FLUXO_LAKE_ROOT")) as home:
        return run(args, home, {"services up": time.monotonic() - t})


def run(args, home: Path, timings: dict[str, float]) -> int:
    # The day is sized in S3 records: the other sources' extract tasks are skipped.
    env = {**os.environ, "FLUXO_SOURCES": "s3"}

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

    runner = ScheduledRuns(home, env) if args.scheduler else DagTest(env)
    try:
        return report(args, home, env, settings, runner, rows_per_day, timings)
    finally:
        runner.close()


def report(args, home: Path, env: dict, settings, runner, rows_per_day: int, timings: dict[str, float]) -> int:
    dag_wall = runner.run(args.day, home / "bench-dag.log")
    if dag_wall is None:
        return 1
    stages = task_times(env)
    rerun_wall = runner.run(args.day, home / "bench-dag-rerun.log")
    if rerun_wall is None:
        return 1

    if args.next_day:
        next_day = args.day + timedelta(days=1)
        generate(home / "generated-next", next_day, days=1, rows_per_day=rows_per_day, seed=args.seed, sources=("s3",))
        upload_landing(home / "generated-next", [next_day], settings)
        next_wall = runner.run(next_day, home / "bench-dag-next.log")
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
    print_tasks(stages)
    print(f"{'transactions_etl (' + runner.label + ')':<40}{dag_wall:>9.1f}")
    print(f"{'rerun of the unchanged day':<40}{rerun_wall:>9.1f}   ({rerun_wall / dag_wall:.2f} of the first run,"
          f" {skipped} stages skipped)")
    print(f"throughput: {read / dag_wall:,.0f} records/s through the whole DAG")
    if args.next_day:
        print(f"\nthe next day ({next_day}) on the warm services")
        print_tasks(next_stages)
        print(f"{'transactions_etl (' + runner.label + ')':<40}{next_wall:>9.1f}")
    print("fraud alerts against the generator's planted fraud:")
    print_fraud_report(settings.database_url, home / "generated", [args.day])
    return 0


def print_tasks(stages) -> None:
    for task_id, seconds, offset in stages:
        print(f"{'  dag task ' + task_id:<40}{float(seconds or 0):>9.1f}   (from +{float(offset or 0):.1f} s)")


class DagTest:
    """Each run as `airflow dags test`: one process, tasks one at a time."""

    label = "airflow dags test"

    def __init__(self, env: dict):
        self.env = env

    def run(self, day: date, log: Path) -> float | None:
        """Wall seconds of one run of the day (None when it failed)."""
        t = time.monotonic()
        with log.open("w") as out:
            proc = subprocess.run([str(AIRFLOW_BIN), "dags", "test", DAG, day.isoformat()],
                                  env=self.env, stdout=out, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            print(f"the DAG run failed; see {log}", file=sys.stderr)
            return None
        return time.monotonic() - t

    def close(self) -> None:
        pass


class ScheduledRuns:
    """Each run triggered through Airflow's REST API and run by its scheduler (LocalExecutor)."""

    label = "scheduler, REST trigger"

    def __init__(self, home: Path, env: dict):
        from fluxo_dev.stack import Stack

        self.stack = Stack(home=home, progress=lambda message: None)
        t = time.monotonic()
        extra = {"FLUXO_SOURCES": env["FLUXO_SOURCES"], "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}
        self.client = rest_client(*self.stack.start_airflow(extra, feeds=False))
        wait_for(lambda: self.client.get(f"/dags/{DAG}").status_code == 200, timeout=300, interval=0.5)
        self.client.patch(f"/dags/{DAG}", json={"is_paused": False}).raise_for_status()
        print(f"Airflow's components up and the DAG parsed in {time.monotonic() - t:.1f} s")

    def run(self, day: date, log: Path) -> float | None:
        """Seconds from the trigger to the run's end (None when it failed or took over an hour)."""
        t = time.monotonic()
        answer = self.client.post(f"/dags/{DAG}/dagRuns", json={
            "logical_date": None, "conf": {"run_date": day.isoformat(), "sources": ["s3"]}})
        answer.raise_for_status()
        run_id = answer.json()["dag_run_id"]

        def state() -> str:
            return self.client.get(f"/dags/{DAG}/dagRuns/{run_id}").json()["state"]

        wait_for(lambda: state() in ("success", "failed"), timeout=3600, interval=0.25)
        wall = time.monotonic() - t
        final = state()
        log.write_text(f"run {run_id}: {final} after {wall:.1f} s; task logs under {self.stack.home / 'airflow'}\n")
        if final != "success":
            print(f"the DAG run {run_id} ended {final}; task logs under {self.stack.home / 'airflow'}", file=sys.stderr)
            return None
        return wall

    def close(self) -> None:
        self.client.close()
        self.stack.stop_airflow()


def task_times(env: dict) -> list[tuple[str, float]]:
    """(task id, seconds, started at seconds after the run's first task) of the latest
    transactions_etl run, from Airflow's own records."""
    import psycopg

    with psycopg.connect(metadata_database_url(env)) as conn:
        return conn.execute(
            """
            SELECT task_id, extract(epoch FROM end_date - start_date),
                   extract(epoch FROM start_date - min(start_date) OVER ())
            FROM task_instance
            WHERE dag_id = 'transactions_etl' AND run_id = (
                SELECT run_id FROM dag_run WHERE dag_id = 'transactions_etl' ORDER BY id DESC LIMIT 1)
            ORDER BY start_date
            """
        ).fetchall()


if __name__ == "__main__":
    sys.exit(main())
