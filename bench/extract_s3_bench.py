"""S3 landing throughput: the generator's s3 files (CSV + JSONL, ~1M records) landed by `land_s3_files`.

    .venv/bin/python bench/extract_s3_bench.py [--rows 1000000] [--day 2026-11-20]

Prints rows/s and MB/s of a first run (every object new), the time of a second run (every
object already in the manifest), a plain boto3 read of the same objects as the reference,
and the peak memory growth while landing (objects are streamed, so it stays flat).
The services run in their own home (.fluxo/bench-extract-s3-home), stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import date
from pathlib import Path

from _common import bench_services, rows_per_day_for


class PeakRss:
    """Samples this process's resident memory in the background; `growth` is the peak above the start."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def plain_read(client, bucket: str, keys: list[str]) -> float:
    """Seconds to read every object with boto3 into nothing: what the S3 server alone costs."""
    started = time.perf_counter()
    for key in keys:
        for _ in client.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(8 * 1024 * 1024):
            pass
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="records in the day's s3 files (approximately)")
    parser.add_argument("--day", type=date.fromisoformat, default=date(2026, 11, 20))
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()

    with bench_services("bench-extract-s3-home") as home:
        return run(args, home)


def run(args, home: Path) -> int:
    import psycopg

    from fluxo_dev.generator import generate, upload_landing
    from fluxo_platform.settings import get_settings
    from fluxo_dev.stack.s3 import s3_client
    from fluxo_platform.warehouse import migrate
    from fluxo_extract.s3_files import land_s3_files

    get_settings.cache_clear()
    settings = get_settings()
    migrate(settings.database_url)

    summary = generate(home / "generated", args.day, days=1, seed=args.seed, sources=("s3",),
                       rows_per_day=rows_per_day_for(args.rows, "s3", home, args.day, args.seed))
    keys = upload_landing(home / "generated", [args.day], settings)
    client = s3_client(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key)
    sizes = [client.head_object(Bucket=settings.landing_bucket, Key=k)["ContentLength"] for k in keys]
    records, total = summary["records"], sum(sizes)
    reference = plain_read(client, settings.landing_bucket, keys)

    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        with PeakRss() as memory:
            started = time.perf_counter()
            first = land_s3_files(args.day.isoformat(), conn=conn)
            first_s = time.perf_counter() - started
        started = time.perf_counter()
        second = land_s3_files(args.day.isoformat(), conn=conn)
        second_s = time.perf_counter() - started
    if first["files"] != len(keys) or first["landed_bytes"] != total or second["files"] != 0:
        print(f"unexpected counts: first {first}, second {second}", file=sys.stderr)
        return 1

    mb = total / 1e6
    print(f"\ns3 landing benchmark: {records:,} records in {len(keys)} objects, {mb:,.1f} MB "
          f"(largest {max(sizes) / 1e6:,.1f} MB)")
    print(f"first run (all new):        {first_s:7.2f} s  {records / first_s:12,.0f} rows/s  {mb / first_s:8.1f} MB/s")
    print(f"plain boto3 read (no lake): {reference:7.2f} s  {records / reference:12,.0f} rows/s  "
          f"{mb / reference:8.1f} MB/s  -> landing at {reference / first_s:.2f}x of it")
    print(f"second run (all seen):      {second_s:7.2f} s  {second['skipped_seen']} objects skipped by the manifest")
    print(f"peak memory growth while landing: {memory.growth / 1e6:,.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
