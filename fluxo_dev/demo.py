"""`make demo`: start the local services, seed sample data, run `transactions_etl` with Airflow, show results.

Everything runs for real on this machine: PostgreSQL, the S3 server, Spark (the Glue
scripts in local mode), Great Expectations, Airflow (`airflow dags test`) and the API
(uvicorn). Exits non-zero with a clear message when any step fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from fluxo_platform.settings import REPO_ROOT, default_home

AIRFLOW_BIN = Path(sys.executable).parent / "airflow"


class DemoFailed(Exception):
    pass


def step(title: str) -> float:
    print(f"\n==> {title}", flush=True)
    return time.monotonic()


def done(started: float, note: str = "") -> None:
    print(f"    ok in {time.monotonic() - started:.1f}s{(' - ' + note) if note else ''}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TASK_EVENT = re.compile(r"\[DAG TEST\] (starting|end task) task_id=(\S+)")


def run_airflow_day(env: dict, day: date, log_dir: Path) -> float:
    """`airflow dags test` for one day; prints each task as it finishes, keeps the full log in a file."""
    log_file = log_dir / f"transactions_etl-{day}.log"
    started = time.monotonic()
    task_started: dict[str, float] = {}
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            [str(AIRFLOW_BIN), "dags", "test", "transactions_etl", day.isoformat()],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        for line in proc.stdout:
            log.write(line)
            event = TASK_EVENT.search(line)
            if event and event.group(1) == "starting":
                task_started[event.group(2)] = time.monotonic()
            elif event:
                task = event.group(2)
                print(f"    - {task:<28}{time.monotonic() - task_started.get(task, started):>6.1f}s", flush=True)
        proc.wait()
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        text = log_file.read_text(errors="replace")
        reasons = [line.split("FLUXO_ERROR:", 1)[1].strip() for line in text.splitlines() if "FLUXO_ERROR:" in line]
        reason = reasons[-1] if reasons else "see the log"
        raise DemoFailed(f"transactions_etl failed for {day}: {reason}\n    full log: {log_file}")
    return elapsed


def publish_day(generated: Path, day: date, settings) -> str:
    """Put one generated day where each source would have it: S3 files, OLTP rows, Kafka events."""
    from fluxo_dev.generator import upload_landing
    from fluxo_dev.source_db import seed
    from fluxo_dev.streaming import produce
    from fluxo_dev.streaming.producer import event_files

    keys = upload_landing(generated, [day], settings)
    rows = seed(settings.source_database_url, generated, [day])
    events = sum(produce(f, settings.kafka_bootstrap) for f in event_files(generated, [day.isoformat()]))
    pages = len(list((generated / "api" / f"dt={day}").glob("page-*.json")))
    return f"{len(keys)} S3 objects, {rows:,} OLTP rows, {events:,} Kafka events, {pages} API pages"


@contextlib.contextmanager
def partner_api_for(generated: Path, day: date, demo_dir: Path):
    """The partner API simulator serving the records the partner has by the end of `day`."""
    from fluxo_dev.simulator import start_simulator

    feed = demo_dir / "partner-api" / "api"
    feed.mkdir(parents=True, exist_ok=True)
    link = feed / f"dt={day}"
    if not link.exists():
        link.symlink_to(generated / "api" / f"dt={day}", target_is_directory=True)
    with start_simulator(feed.parent, log=demo_dir / "logs" / "partner-api.log") as sim:
        yield sim.connection_uri()


def print_run_summary(database_url: str, days: list[date]) -> None:
    import psycopg

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            """
            SELECT DISTINCT ON (ingest_date) ingest_date, state, counts FROM audit.pipeline_runs
            WHERE ingest_date = ANY(%s) ORDER BY ingest_date, finished_at DESC
            """,
            (days,),
        ).fetchall()
    print(f"    {'day':<12}{'state':<9}{'landed':>8}{'read':>9}{'quarant.':>10}{'dupes':>8}{'known':>8}{'curated':>9}"
          f"{'metrics':>8}")
    for ingest_date, state, c in rows:
        s = c.get("stage_stats", {}).get("standardize", {})
        print(
            f"    {ingest_date!s:<12}{state:<9}{c.get('landed_records', 0):>8}{s.get('read', 0):>9}"
            f"{s.get('quarantined', 0):>10}{c.get('duplicates_in_batch', 0):>8}{c.get('already_curated', 0):>8}"
            f"{c.get('curated_new', 0):>9}"
            f"{c.get('metric_rows_loaded', 0):>8}"
        )
        for source, got in sorted((c.get("extracted") or {}).items()):
            if got:
                print(f"      extracted {source:<6} " + ", ".join(f"{k}={got[k]}" for k in ("landed", "quarantined", "skipped_seen") if k in got))
        reasons = s.get("quarantine_by_reason") or {}
        if reasons:
            print("      quarantined by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())))


def print_fraud_report(database_url: str, generated: Path, days: list[date], top: int = 5) -> dict:
    """Precision and recall of the warehouse's fraud alerts against the generator's planted fraud,
    per rule and overall, and the day's top alerts by score."""
    import psycopg
    import pyarrow.parquet as pq

    from fluxo.contract import FRAUD_RULES
    from fluxo_dev.fraud_reference import format_scores, precision_recall, truth_labels

    truth = pq.read_table(generated / "truth" / "transactions.parquet",
                          columns=["transaction_id", "event_ts", "fraud_pattern", "is_outlier"])
    with psycopg.connect(database_url) as conn:
        alerts = conn.execute("SELECT transaction_id, rules FROM metrics.fraud_alerts WHERE event_date = ANY(%s)",
                              (days,)).fetchall()
        best = conn.execute(
            "SELECT event_date, transaction_id, score, severity, rules, amount_reporting, country, mcc"
            " FROM metrics.fraud_alerts WHERE event_date = %s ORDER BY score DESC, transaction_id LIMIT %s",
            (days[-1], top)).fetchall()
    labels, outliers = truth_labels(truth, days)
    scores = precision_recall({t: set(r.split(",")) for t, r in alerts}, labels, list(FRAUD_RULES), outliers)
    print("    " + format_scores(scores).replace("\n", "\n    "))
    print(f"    top alerts of {days[-1]}:")
    for day, tid, score, severity, rules, amount, country, mcc in best:
        print(f"      {tid}  score {score:.2f} {severity:<8} {amount:>10} {country} mcc {mcc}  {rules}")
    return scores


def call_api(env: dict, first: date, last: date, log_dir: Path) -> dict:
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (log_dir / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--app-dir", str(REPO_ROOT / "api"),
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise DemoFailed(f"the API did not start; see {log_dir / 'api.log'}")
            time.sleep(0.3)
        token = httpx.post(
            f"{base}/auth/token",
            data={"grant_type": "client_credentials", "client_id": env["FLUXO_API_CLIENT_ID"],
                  "client_secret": env["FLUXO_API_CLIENT_SECRET"]},
        )
        if token.status_code != 200:
            raise DemoFailed(f"token request refused: {token.status_code} {token.text}")
        access = token.json()["access_token"]
        query = {"from": first.isoformat(), "to": last.isoformat()}
        print(f"    POST {base}/auth/token  (client_credentials, client_id={env['FLUXO_API_CLIENT_ID']}) -> 200")
        print(f"    GET  {base}/metrics/daily?from={query['from']}&to={query['to']}  (Authorization: Bearer …)")
        answer = httpx.get(f"{base}/metrics/daily", params=query, headers={"Authorization": f"Bearer {access}"})
        if answer.status_code != 200:
            raise DemoFailed(f"metrics request refused: {answer.status_code} {answer.text}")
        return answer.json()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=2, help="days of sample data (default 2)")
    parser.add_argument("--rows-per-day", type=int, default=20_000, help="generated records per day (default 20000)")
    parser.add_argument("--last-day", type=date.fromisoformat, default=date.today() - timedelta(days=1),
                        help="last day to generate and process (default yesterday)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    home = default_home()
    demo_dir = home / "demo"
    log_dir = demo_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    days = [args.last_day - timedelta(days=i) for i in reversed(range(args.days))]
    total = time.monotonic()
    try:
        t = step("starting local services (PostgreSQL, Kafka-protocol broker, S3 server)")
        from fluxo_dev.stack import Stack

        env = {**os.environ, **Stack(home=home).up()}
        os.environ.update(env)
        from fluxo_platform.settings import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        done(t, f"home {home}")

        t = step("migrating the warehouse and the Airflow metadata database")
        from fluxo_platform.warehouse import migrate

        applied = migrate(settings.database_url)
        proc = subprocess.run([str(AIRFLOW_BIN), "db", "migrate"], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise DemoFailed("airflow db migrate failed:\n" + proc.stderr[-2000:])
        done(t, f"warehouse migrations applied now: {applied or 'none (up to date)'}")

        t = step(f"generating {args.days} day(s) x {args.rows_per_day:,} transactions in the four source shapes")
        from fluxo_dev.generator import generate

        generated = demo_dir / "generated"
        summary = generate(generated, days[0], days=args.days, rows_per_day=args.rows_per_day, seed=args.seed)
        done(t, f"{summary['records']:,} records with ground truth in {generated}")

        for day in days:
            t = step(f"{day}: the sources receive the day's data")
            feed = publish_day(generated, day, settings)
            done(t, feed)
            t = step(f"airflow dags test transactions_etl {day}")
            with partner_api_for(generated, day, demo_dir) as api_conn:
                elapsed = run_airflow_day({**env, "AIRFLOW_CONN_FLUXO_PARTNER_API": api_conn}, day, log_dir)
            done(t, f"log {log_dir / f'transactions_etl-{day}.log'} ({elapsed:.0f}s)")

        t = step("rows per stage (from the audit record in audit.pipeline_runs)")
        print_run_summary(settings.database_url, days)
        t = step("Fraud alerts scored against the generator's planted fraud")
        print_fraud_report(settings.database_url, generated, days)
        done(t)

        print(f"\n    lake:          {settings.lake_root}")
        print(f"    curated:       {settings.lake_root}/curated/transactions/  (Delta table, partitioned by event_date)")
        print(f"    quarantine:    {settings.lake_root}/quarantine/")
        print(f"    GX Data Docs:  {settings.lake_root}/quality/data_docs/index.html")

        t = step("calling the API with a real token")
        answer = call_api(env, days[0] - timedelta(days=1), days[-1], log_dir)
        print(json.dumps(answer, indent=2, default=str))
        done(t)
    except DemoFailed as failure:
        print(f"\nDEMO FAILED: {failure}", file=sys.stderr)
        return 1
    except Exception as failure:  # noqa: BLE001 - the demo reports any failure in one line, then the trace
        import traceback

        traceback.print_exc()
        print(f"\nDEMO FAILED: {type(failure).__name__}: {failure}", file=sys.stderr)
        return 1
    print(f"\nfluxo demo finished in {time.monotonic() - total:.0f}s. Services are still running:")
    print("  make status   # endpoints      make airflow   # Airflow UI on the same services      make down   # stop them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
