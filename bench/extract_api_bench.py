"""Partner API landing throughput: ~1M generator api records pulled from the simulator by `extract_partner_api`.

    .venv/bin/python bench/extract_api_bench.py [--rows 1000000] [--page-limit 1000] [--faults all]

Prints rows/s of a first run (every record new), of a second run (the overlap window re-read
and skipped), and of a plain client over the same server (requests + json.loads per page,
no landing) as the reference. The simulator runs in its own process; PostgreSQL (extraction
state) runs in its own home (.fluxo/bench-extract-api-home), stopped and deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

from _common import bench_services, rows_per_day_for


def plain_client(base_url: str, token: str, page_limit: int) -> tuple[float, int, int]:
    """(seconds, records, bytes) to page through everything with requests and json.loads."""
    import json

    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    params: dict = {"limit": page_limit}
    records = size = 0
    started = time.perf_counter()
    while True:
        response = session.get(f"{base_url}/transactions", params=params, timeout=60)
        response.raise_for_status()
        page = json.loads(response.content)
        records += len(page["data"])
        size += len(response.content)
        if not page["next_cursor"]:
            return time.perf_counter() - started, records, size
        params = {"limit": page_limit, "cursor": page["next_cursor"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="api records to serve (approximately)")
    parser.add_argument("--day", type=date.fromisoformat, default=date(2026, 11, 20))
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--page-limit", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--faults", nargs="*", default=[], help="simulator faults for the first run, e.g. all")
    args = parser.parse_args()

    with bench_services("bench-extract-api-home") as home:  # ~1 GB of generated pages and landed copies
        return run(args, home)


def run(args, home: Path) -> int:
    import psycopg

    from fluxo_dev.generator import generate
    from fluxo_platform.settings import get_settings
    from fluxo_dev.simulator import start_simulator
    from fluxo_dev.simulator.__main__ import parse_faults
    from fluxo_platform.warehouse import migrate
    from fluxo_extract.rest_api import extract_partner_api

    get_settings.cache_clear()
    settings = get_settings()
    migrate(settings.database_url)

    rows_per_day = rows_per_day_for(args.rows // args.days, "api", home, args.day, args.seed)
    started = time.perf_counter()
    summary = generate(home / "generated", args.day, days=args.days, seed=args.seed, sources=("api",),
                       rows_per_day=rows_per_day)
    generated_s = time.perf_counter() - started
    records = summary["records"]

    started = time.perf_counter()
    with start_simulator(home / "generated", log=home / "simulator.log", startup_timeout=900) as sim:
        load_s = time.perf_counter() - started
        os.environ["AIRFLOW_CONN_FLUXO_PARTNER_API"] = sim.connection_uri(timeout=60)
        reference_s, reference_records, size = plain_client(sim.base_url, sim.token, args.page_limit)
        if args.faults:
            sim.set_faults(**parse_faults(args.faults))
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            started = time.perf_counter()
            first = extract_partner_api(args.day.isoformat(), conn=conn, page_limit=args.page_limit)
            first_s = time.perf_counter() - started
            sim.clear_faults()
            started = time.perf_counter()
            second = extract_partner_api(args.day.isoformat(), conn=conn, page_limit=args.page_limit)
            second_s = time.perf_counter() - started
        stats = sim.stats()
    read = first["landed"] + first["quarantined"]
    if reference_records != records or not first["complete"] or read != records + stats["changed"] \
            or second["landed"] != 0:
        print(f"unexpected counts: served {reference_records} of {records}; first {first}; second {second}",
              file=sys.stderr)
        return 1

    mb = size / 1e6
    print(f"\npartner API landing benchmark: {records:,} records ({mb:,.1f} MB) in pages of {args.page_limit}; "
          f"generated in {generated_s:.1f} s, simulator loaded in {load_s:.1f} s")
    print(f"first run (all new):          {first_s:7.2f} s  {records / first_s:10,.0f} rows/s  "
          f"{mb / first_s:6.1f} MB/s  ({first['landed']:,} landed, {first['quarantined']:,} quarantined, "
          f"{first['retries']} retries, faults {args.faults or 'none'})")
    print(f"plain client (no landing):    {reference_s:7.2f} s  {records / reference_s:10,.0f} rows/s  "
          f"-> extractor at {reference_s / first_s:.2f}x of it")
    print(f"second run (overlap re-read): {second_s:7.2f} s  {second['read']:,} read, "
          f"{second['skipped_seen']:,} skipped as seen, {second['landed']} landed")
    print(f"server: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
