"""python -m fluxo_dev.source_db seed|activity … (the database defaults to FLUXO_SOURCE_DATABASE_URL)."""

from __future__ import annotations

import argparse
import json

from fluxo_platform.settings import get_settings
from fluxo_dev.source_db import ensure_schema, seed, simulate_activity


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fluxo_dev.source_db", description=__doc__)
    parser.add_argument("--url", default=None, help="source database URL (default: FLUXO_SOURCE_DATABASE_URL)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("schema", help="create payments.card_transaction")
    seeding = commands.add_parser("seed", help="COPY the generator's db days into the table")
    seeding.add_argument("generated_dir", help="output folder of `python -m fluxo_dev.generator`")
    seeding.add_argument("--days", default=None, help="comma-separated YYYY-MM-DD (default: every dt=*)")
    activity = commands.add_parser("activity", help="simulate OLTP updates, inserts and late commits")
    activity.add_argument("--updates", type=int, default=100, help="approved rows to reverse")
    activity.add_argument("--inserts", type=int, default=100, help="new transactions")
    activity.add_argument("--spread", action="store_true", help="one transaction per row (no shared updated_at)")
    activity.add_argument("--late", type=int, default=0, help="rows reversed by a transaction that commits last")
    activity.add_argument("--hold", type=float, default=0.0, help="seconds the late transaction stays open")
    args = parser.parse_args(argv)

    url = args.url or get_settings().source_database_url
    if not url:
        parser.error("no database: pass --url or set FLUXO_SOURCE_DATABASE_URL (or run `python -m fluxo_dev.stack up`)")
    if args.command == "schema":
        ensure_schema(url)
        print(json.dumps({"schema": "ok"}))
    elif args.command == "seed":
        days = args.days.split(",") if args.days else None
        print(json.dumps({"inserted": seed(url, args.generated_dir, days)}))
    else:
        touched = simulate_activity(url, args.updates, args.inserts, same_timestamp=not args.spread,
                                    late_updates=args.late, hold_seconds=args.hold)
        print(json.dumps({k: len(v) for k, v in touched.items()}))


if __name__ == "__main__":
    main()
