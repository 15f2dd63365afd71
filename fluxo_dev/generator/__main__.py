"""python -m fluxo_dev.generator --start 2026-11-25 --days 2 --rows-per-day 20000 --out DIR --seed 42 [--sources ...] [--upload]"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, timedelta
from pathlib import Path

from .core import generate, parse_sources, stderr_progress, upload_landing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fluxo_dev.generator", description=__doc__)
    parser.add_argument("--start", type=date.fromisoformat, required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--rows-per-day", type=int, default=20_000, help="distinct transactions per day")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sources", type=parse_sources, default=parse_sources("s3,api,db,kafka"),
                        help="comma-separated subset of s3,api,db,kafka")
    parser.add_argument("--defect-rates", type=json.loads, default=None,
                        help='JSON overrides, e.g. \'{"malformed_record": 0.02, "kafka": {"redelivery": 0.05}}\'')
    parser.add_argument("--upload", action="store_true", help="put the s3 files into the landing bucket")
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be >= 1")

    summary = generate(args.out, args.start, args.days, args.rows_per_day, args.seed, args.sources,
                       defect_rates=args.defect_rates, progress=stderr_progress)
    for day, per_source in summary["days"].items():
        for source, s in per_source.items():
            defects = ", ".join(f"{k}={v}" for k, v in s["defects"].items())
            print(f"{day} {source}: {s['records']} records in {len(s['files'])} files, "
                  f"{s['expected_valid']} valid / {s['expected_quarantined']} quarantined ({defects})")
    print(f"truth: {summary['truth_rows']} transactions; {summary['records']} records in "
          f"{summary['elapsed_seconds']} s ({summary['records_per_second']} records/s) -> {args.out}")
    if args.upload and "s3" in args.sources:
        days = [args.start + timedelta(days=i) for i in range(args.days)]
        keys = upload_landing(args.out, days)
        print(f"uploaded {len(keys)} objects to the landing bucket")
    return 0


if __name__ == "__main__":
    sys.exit(main())
