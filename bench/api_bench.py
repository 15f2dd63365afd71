"""Query API under load: `GET /metrics/daily` with a token (auth + audit) beside a bare FastAPI route.

    .venv/bin/python bench/api_bench.py [--seconds 30] [--connections 50 200] [--workers 2]
                                        [--pool-size 8] [--cache-ttl 2] [--no-access-log]

Both apps run the same way (uvicorn, `--workers N`, uvloop, httptools) in the same run, and
`wrk` (Debian's; `apt-get install wrk`) loads them in turn at each connection count. Printed per
run: requests/s, the ratio to the bare route, p50/p99, errors, audit rows lost (requests wrk
counted minus audit rows written), the most warehouse connections seen in pg_stat_activity
(sampled every 100 ms) against the pool limit, and the load average. Then an OData page of
10,000 rows: time to first byte and rows/s. PostgreSQL runs in its own home
(.fluxo/bench-api-home), stopped and deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from _common import REPO_ROOT, bench_services

BARE_APP = '''
from fastapi import FastAPI

app = FastAPI()


@app.get("/bare")
async def bare():
    return {"status": "ok"}
'''
DAYS = 31
MERCHANTS = 400  # 12,400 merchant-day rows for the OData page


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def seed(url: str) -> None:
    import psycopg
    import pyarrow as pa

    from fluxo.contract import DAILY_METRICS, METRIC_GRAINS
    from fluxo_platform.warehouse import migrate, replace_days

    migrate(url)
    first = date(2025, 1, 1)
    days = [first + timedelta(days=d) for d in range(DAYS)]
    merchant_contract, _ = METRIC_GRAINS["merchant_daily"]
    with psycopg.connect(url, autocommit=True) as conn:
        for contract, table, per_day in ((DAILY_METRICS, "daily_transactions", 1),
                                         (merchant_contract, "merchant_daily", MERCHANTS)):
            n = len(days) * per_day
            columns = {"event_date": [d for d in days for _ in range(per_day)],
                       "merchant_id": [f"m{i:05d}" for _ in days for i in range(per_day)]}
            arrays = []
            for field in contract.arrow_schema():
                if field.name in columns:
                    values = columns[field.name]
                elif pa.types.is_decimal(field.type):
                    values = [Decimal(f"{1000 + i % 997}.{i % 100:02d}") for i in range(n)]
                elif pa.types.is_integer(field.type):
                    values = [10_000 + i for i in range(n)]
                elif pa.types.is_floating(field.type):
                    values = [0.93] * n
                else:
                    values = ["BRL"] * n
                arrays.append(pa.array(values, field.type))
            rows = pa.Table.from_arrays(arrays, schema=contract.arrow_schema())
            replace_days(conn, "metrics", table, rows, extra={"run_id": "bench"})


def serve(app: str, app_dir: Path, port: int, workers: int, env: dict, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "uvicorn", app, "--app-dir", str(app_dir), "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
               "--no-access-log", "--log-level", "warning"]
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer")


def stop(process: subprocess.Popen) -> None:
    import signal

    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def wrk(url: str, connections: int, seconds: int, headers: dict[str, str]) -> dict:
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s", "--latency", url]
    for name, value in headers.items():
        command[1:1] = ["-H", f"{name}: {value}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50": ms("50"), "p99": ms("99"),
        "errors": (sum(int(x) for x in errors.groups()) if errors else 0) + (int(non_2xx.group(1)) if non_2xx else 0),
    }


class ConnectionSampler:
    """The most warehouse connections of the API seen in pg_stat_activity while it runs."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            count = self.conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fluxo-api'").fetchone()[0]
            self.peak = max(self.peak, count)
            time.sleep(0.1)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def audit_count(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM audit.api_access WHERE path = '/metrics/daily'").fetchone()[0]


def settled_audit_count(url: str, timeout: float = 30) -> int:
    """The audit count once the writers have flushed (two equal readings in a row)."""
    last, deadline = -1, time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = audit_count(url)
        if now == last:
            return now
        last = now
        time.sleep(1.0)
    return last


def odata_page(base: str, token: str, rounds: int = 5) -> dict:
    import httpx

    ttfb, total, rows = [], [], 0
    url = f"{base}/odata/MerchantDailyMetrics"
    params = {"$top": "10000", "$filter": "event_date ge 2025-01-01"}
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(rounds):
            started = time.perf_counter()
            with http.stream("GET", url, params=params) as response:
                chunks = response.iter_raw()
                first = next(chunks)
                ttfb.append(time.perf_counter() - started)
                body = first + b"".join(chunks)
            total.append(time.perf_counter() - started)
            rows = len(json.loads(body)["value"])
    return {"rows": rows, "ttfb_ms": statistics.median(ttfb) * 1000, "total_ms": statistics.median(total) * 1000,
            "rows_per_s": rows / statistics.median(total)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--connections", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=8, help="warehouse connections per worker")
    parser.add_argument("--cache-ttl", type=float, default=2.0, help="FLUXO_API_CACHE_TTL_SECONDS (0: off)")
    parser.add_argument("--no-access-log", action="store_true", help="no JSON line per request on stderr")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is missing: apt-get install -y wrk", file=sys.stderr)
        return 2

    with bench_services("bench-api-home") as home:
        url = os.environ["FLUXO_DATABASE_URL"]
        seed(url)
        logs = home / "logs"
        logs.mkdir(exist_ok=True)
        bare_dir = home / "bare"
        bare_dir.mkdir(exist_ok=True)
        (bare_dir / "bare_app.py").write_text(BARE_APP)
        metrics_dir = home / "prometheus"
        metrics_dir.mkdir(exist_ok=True)
        env = {**os.environ, "FLUXO_API_POOL_MAX_SIZE": str(args.pool_size),
               "FLUXO_API_POOL_MIN_SIZE": str(min(2, args.pool_size)),
               "FLUXO_API_CACHE_TTL_SECONDS": str(args.cache_ttl), "FLUXO_API_ACCESS_LOG": str(not args.no_access_log),
               "FLUXO_API_SIGNING_KEYS_DIR": str(home / "keys"), "FLUXO_API_TOKEN_RATE_BURST": "1000",
               "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        api_port, bare_port = free_port(), free_port()
        api = serve("app.main:app", REPO_ROOT / "api", api_port, args.workers, env, logs / "api.log")
        bare = serve("bare_app:app", bare_dir, bare_port, args.workers, env, logs / "bare.log")
        try:
            api_base, bare_base = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{bare_port}"
            wait_for(api_base + "/readyz")
            wait_for(bare_base + "/bare")
            import httpx

            token = httpx.post(api_base + "/auth/token", data={
                "grant_type": "client_credentials", "client_id": os.environ["FLUXO_API_CLIENT_ID"],
                "client_secret": os.environ["FLUXO_API_CLIENT_SECRET"]}).json()["access_token"]
            daily = f"{api_base}/metrics/daily?from=2025-01-01&to=2025-01-31"
            bearer = {"Authorization": f"Bearer {token}"}
            wrk(daily, 10, 2, bearer)  # warm-up: pools filled, caches primed
            wrk(bare_base + "/bare", 10, 2, {})
            print(f"workers={args.workers} pool={args.pool_size}/worker cache_ttl={args.cache_ttl}s "
                  f"access_log={not args.no_access_log} seconds={args.seconds}")
            print("| connections | bare req/s | API req/s | ratio | API p50 / p99 ms | bare p50 / p99 ms "
                  "| errors | audit rows lost | peak warehouse connections (limit) | load avg before → after |")
            print("|---|---|---|---|---|---|---|---|---|---|")
            for connections in args.connections:
                before_load = load_average()
                bare_run = wrk(bare_base + "/bare", connections, args.seconds, {})
                audit_before = settled_audit_count(url)
                with ConnectionSampler(url) as sampler:
                    api_run = wrk(daily, connections, args.seconds, bearer)
                audit_after = settled_audit_count(url)
                lost = max(0, api_run["requests"] - (audit_after - audit_before))
                print(f"| {connections} | {bare_run['rps']:,.0f} | {api_run['rps']:,.0f} "
                      f"| {api_run['rps'] / bare_run['rps']:.2f} | {api_run['p50']:.1f} / {api_run['p99']:.1f} "
                      f"| {bare_run['p50']:.1f} / {bare_run['p99']:.1f} | {api_run['errors'] + bare_run['errors']} "
                      f"| {lost} | {sampler.peak} ({args.workers * args.pool_size}) "
                      f"| {before_load} → {load_average()} |", flush=True)
            page = odata_page(api_base, token)
            print(f"\nOData page of {page['rows']:,} rows (MerchantDailyMetrics, $top=10000): time to first byte "
                  f"{page['ttfb_ms']:.0f} ms, whole page {page['total_ms']:.0f} ms, {page['rows_per_s']:,.0f} rows/s "
                  f"(median of 5; load avg {load_average()})")
        finally:
            stop(api)
            stop(bare)
    return 0


if __name__ == "__main__":
    sys.exit(main())
