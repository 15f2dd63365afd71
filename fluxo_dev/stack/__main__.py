"""CLI: python -m fluxo_dev.stack up [--no-feeds] | airflow | down [--purge] | status | env | provision"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from fluxo_dev.stack.core import DOTENV_SECRETS, Stack, load_env, provision
from fluxo_dev.stack.java import java_home
from fluxo_platform.settings import REPO_ROOT
from fluxo_dev.stack.process import StackError


def print_status(stack: Stack) -> None:
    rows = [("service", "state", "endpoint", "pid")]
    for name, info in stack.status().items():
        rows.append((name, info["state"], info["endpoint"] or "-", str(info["pid"] or "-")))
    try:
        rows.append(("java", "found", str(java_home()), "-"))
    except StackError:
        rows.append(("java", "missing", "-", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def dotenv(credentials) -> str:
    """.env.example with every secret filled from the credentials (generated on first use)."""
    lines = []
    for line in (REPO_ROOT / ".env.example").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key in DOTENV_SECRETS and not value:
            line = f"{key}={credentials.get(DOTENV_SECRETS[key])}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fluxo_dev.stack", description=__doc__)
    parser.add_argument("--home", type=Path, help="state folder (default: FLUXO_HOME or <repo>/.fluxo)")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start (or reuse) the local services and write <home>/stack.env")
    up.add_argument("--no-feeds", action="store_true",
                    help="without the partner-API simulator and the Kafka producer (the sources stay empty)")
    commands.add_parser("airflow", help="up, then Airflow's api-server, scheduler, dag-processor and triggerer")
    down = commands.add_parser("down", help="stop the local services, keeping their data")
    down.add_argument("--purge", action="store_true", help="also delete the services' data")
    commands.add_parser("status", help="show each service's state, endpoint and pid")
    commands.add_parser("env", help='print export lines: eval "$(python -m fluxo_dev.stack env)"')
    commands.add_parser("provision", help="create buckets, topic and OLTP schema on the services FLUXO_* names")
    commands.add_parser("dotenv", help="print a .env for docker-compose.yaml with generated development secrets")
    args = parser.parse_args(argv)

    stack = Stack(home=args.home)
    try:
        if args.command == "up":
            stack.up(feeds=not args.no_feeds)
            print_status(stack)
            print(f"environment written to {stack.env_file}", file=sys.stderr)
        elif args.command == "airflow":
            env, (user, password) = stack.start_airflow()
            print_status(stack)
            print(f"\nAirflow UI: {env['AIRFLOW__API__BASE_URL']}  login: {user} / {password}  "
                  f"(development only; `make down` stops everything)")
        elif args.command == "down":
            stack.down(purge=args.purge)
        elif args.command == "provision":
            provision()
        elif args.command == "dotenv":
            print(dotenv(stack.credentials), end="")
        elif args.command == "status":
            print_status(stack)
        elif args.command == "env":
            env = load_env(stack.home)
            if not env:
                print(f"no {stack.env_file}: run `python -m fluxo_dev.stack up` first", file=sys.stderr)
                return 1
            for key, value in env.items():
                print(f"export {key}={shlex.quote(value)}")
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
