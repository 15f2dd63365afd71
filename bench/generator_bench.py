"""Throughput of the synthetic generator: 1M transactions across all four sources.

    .venv/bin/python bench/generator_bench.py [--rows 1000000] [--days 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fluxo_dev.generator import generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000, help="transactions in total")
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="keep the output here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fluxo-gen-bench-") as tmp:
        out = args.out or Path(tmp)
        started, cpu_started = time.perf_counter(), time.process_time()
        summary = generate(out, date(2026, 11, 25), args.days, args.rows // args.days, seed=42)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"generator: {summary['records']:,} records ({summary['truth_rows']:,} valid transactions) "
          f"in {elapsed:.2f} s = {summary['records'] / elapsed:,.0f} rows/s "
          f"(CPU {cpu:.2f} s: the wall time grows when other work shares the cores), {size / 1e6:,.0f} MB written")


if __name__ == "__main__":
    main()
