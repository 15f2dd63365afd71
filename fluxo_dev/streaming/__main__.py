"""`python -m fluxo_dev.streaming produce --data DIR [--days D ...] --rate N [--topic T] [--limit N]`."""

from __future__ import annotations

import argparse
import logging
import sys

from fluxo_platform.settings import get_settings
from fluxo_dev.streaming.producer import DEFAULT_TOPIC, event_files, produce


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fluxo_dev.streaming")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("produce", help="stream generator events (kafka/dt=*/events.jsonl) into a topic")
    cmd.add_argument("--data", required=True, help="generator output directory")
    cmd.add_argument("--days", nargs="*", help="only these days (YYYY-MM-DD); default every day found")
    cmd.add_argument("--rate", type=float, default=0, help="messages per second; 0 = as fast as possible")
    cmd.add_argument("--topic", default=DEFAULT_TOPIC)
    cmd.add_argument("--limit", type=int, default=None, help="stop after this many messages")
    cmd.add_argument("--bootstrap", default=None, help="default: FLUXO_KAFKA_BOOTSTRAP from the settings")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    bootstrap = args.bootstrap or get_settings().kafka_bootstrap
    if not bootstrap:
        parser.error("no Kafka bootstrap: start the stack (python -m fluxo_dev.stack up) or set FLUXO_KAFKA_BOOTSTRAP")
    files = event_files(args.data, args.days)
    if not files:
        parser.error(f"no kafka/dt=*/events.jsonl under {args.data} for days {args.days or 'any'}")

    def lines():
        for file in files:
            with file.open(encoding="utf-8") as handle:
                yield from handle

    count = produce(lines(), bootstrap, args.topic, args.rate, args.limit)
    print(f"produced {count} messages from {len(files)} file(s) to {args.topic} at {bootstrap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
