"""Kafka landing throughput against a raw confluent-kafka consumer on the same broker and topic.

    .venv/bin/python bench/extract_kafka_bench.py                     # ~1,000,000 generator events
    .venv/bin/python bench/extract_kafka_bench.py --messages 200000

The services run in their own home (.fluxo/bench-kafka-home, removed afterwards). Both readers start from offset 0
with a fresh consumer group and stop at the known message count (neither waits for idleness); both
assign themselves every partition (no group join), and the landing also writes the raw files,
publishes, confirms in the warehouse and commits. The goal is a ratio (landing / raw) of at least 0.6.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

from _common import bench_services, rows_per_day_for

TOPIC = "transactions-bench"
PARTITIONS = 3


def raw_consume(bootstrap: str, topic: str, expected: int, micro_batch: int) -> tuple[float, float]:
    """Seconds for a bare consumer (fresh group, from the beginning) to read `expected` messages:
    (in total, from its first message on)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, "log_level": 4})
    started = time.monotonic()
    partitions = consumer.list_topics(topic, timeout=15).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)])
    read, first = 0, 0.0
    while read < expected:
        messages = consumer.consume(num_messages=micro_batch, timeout=1.0)
        if messages and not first:
            first = time.monotonic()
        read += len(messages)
        if time.monotonic() - started > 600:
            raise RuntimeError(f"raw consumer read only {read} of {expected} messages in 600 s")
    finished = time.monotonic()
    consumer.close()
    return finished - started, finished - first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000, help="events to produce (approximately)")
    parser.add_argument("--micro-batch", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()

    with bench_services("bench-kafka-home") as home:  # ~1 GB of events and raw files
        return run(home, args)


def run(home: Path, args) -> int:
    from confluent_kafka.admin import AdminClient, NewTopic

    from fluxo_dev.generator import generate
    from fluxo_platform.settings import get_settings
    from fluxo_dev.streaming import event_files, produce
    from fluxo_platform.warehouse import migrate
    from fluxo_extract.kafka_stream import land_kafka

    get_settings.cache_clear()
    settings = get_settings()
    migrate(settings.database_url)
    bootstrap = settings.kafka_bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 4})
    for future in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)], request_timeout=10).values():
        future.result(timeout=15)

    days = max(1, round(args.messages / 500_000))
    rows_per_day = rows_per_day_for(args.messages // days, "kafka", home, date(2026, 11, 1), args.seed)
    t = time.monotonic()
    generate(home / "generated", date(2026, 11, 1), days=days, rows_per_day=rows_per_day,
             seed=args.seed, sources=("kafka",))
    generate_s = time.monotonic() - t
    files = event_files(home / "generated")
    lines = [line for f in files for line in f.read_text().splitlines()]
    t = time.monotonic()
    produced = produce(lines, bootstrap, TOPIC)
    produce_s = time.monotonic() - t
    del lines
    payload_mb = sum(f.stat().st_size for f in files) / 1e6

    raw_s, raw_steady_s = raw_consume(bootstrap, TOPIC, produced, args.micro_batch)
    t = time.monotonic()
    result = land_kafka("2026-11-01", topic=TOPIC, max_messages=produced, idle_seconds=5,
                        micro_batch=args.micro_batch, group_id=f"bench-{time.time_ns()}")
    land_s = time.monotonic() - t
    if result["messages"] != produced:
        raise RuntimeError(f"landed {result['messages']} of {produced} messages")
    raw_rate, land_rate = produced / raw_s, produced / land_s
    land_steady_s = land_s - result["timings"]["first_message_s"]
    raw_steady, land_steady = produced / raw_steady_s, produced / land_steady_s
    print(f"machine load average: {os.getloadavg()[0]:.2f} (2 cores, shared)")
    print(f"generated {produced:,} events ({payload_mb:.0f} MB) in {generate_s:.1f}s")
    print(f"produce (idempotent, as fast as possible): {produced / produce_s:,.0f} msg/s ({produce_s:.1f}s)")
    print(f"raw confluent-kafka consumer:             {raw_rate:,.0f} msg/s ({raw_s:.1f}s incl. group join)")
    print(f"land_kafka (raw files+confirm+commit):    {land_rate:,.0f} msg/s ({land_s:.1f}s incl. group join)")
    print(f"landing time split: {result['timings']}")
    print(f"landed {result['landed']:,}, quarantined {result['quarantined']:,}, batch {result['batch_id']}")
    print(f"from the first message on: raw {raw_steady:,.0f} msg/s ({raw_steady_s:.1f}s), "
          f"landing {land_steady:,.0f} msg/s ({land_steady_s:.1f}s)")
    print(f"ratio landing / raw consumer: {land_rate / raw_rate:.2f} end to end, "
          f"{land_steady / raw_steady:.2f} from the first message (goal >= 0.6)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
