"""Stream the generator's Kafka events (`kafka/dt=D/events.jsonl`) into a topic at a chosen rate.

Each line is exactly one message value; the key is `payload.transaction_id`. A line that is not
valid JSON (the generator's `malformed_record` defect) or has no transaction_id is sent with a null
key, as a broken upstream producer would. The producer is idempotent, so librdkafka's own retries
never write a message twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from confluent_kafka import KafkaException, Producer

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "transactions"
# Rate-limited sending checks the clock every this many messages: small enough to keep a steady
# pace at low rates, large enough to stay cheap at high ones.
PACE_CHUNK = 500


def event_files(data_dir: str | Path, days: Iterable[str] | None = None) -> list[Path]:
    """The generator's event files under `data_dir`, oldest day first (only `days` if given)."""
    root = Path(data_dir) / "kafka"
    files = sorted(root.glob("dt=*/events.jsonl"))
    if days:
        wanted = set(days)
        files = [f for f in files if f.parent.name.removeprefix("dt=") in wanted]
    return files


def message_key(line: str) -> bytes | None:
    try:
        transaction_id = json.loads(line)["payload"]["transaction_id"]
    except (ValueError, KeyError, TypeError):
        return None
    return transaction_id.encode() if isinstance(transaction_id, str) and transaction_id else None


def _lines(path_or_lines: str | Path | Iterable[str]) -> Iterator[str]:
    if isinstance(path_or_lines, (str, Path)):
        path = Path(path_or_lines)
        files = [path] if path.is_file() else event_files(path)
        if not files:
            raise FileNotFoundError(f"no kafka/dt=*/events.jsonl under {path}")
        for file in files:
            with file.open(encoding="utf-8") as handle:
                for line in handle:
                    yield line.rstrip("\n")
    else:
        for line in path_or_lines:
            yield line.rstrip("\n")


def producer_config(bootstrap: str) -> dict:
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 500000,
        "log_level": 4,
    }


def produce(path_or_lines: str | Path | Iterable[str], bootstrap: str, topic: str = DEFAULT_TOPIC,
            rate: float = 0, limit: int | None = None) -> int:
    """Send every line (a generator data dir, one events.jsonl, or lines) as one message.

    `rate` is messages per second (0 = as fast as the broker takes them). Returns the number of
    messages the broker acknowledged; raises if any message could not be delivered.
    """
    producer = Producer(producer_config(bootstrap))
    failures: list[str] = []
    delivered = 0

    def on_delivery(err, _msg) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1
        elif len(failures) < 10:
            failures.append(str(err))
        else:
            failures.append("")

    started = time.monotonic()
    sent = 0
    for line in _lines(path_or_lines):
        if limit is not None and sent >= limit:
            break
        if not line:
            continue
        while True:
            try:
                producer.produce(topic, value=line.encode(), key=message_key(line), on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let librdkafka deliver some first
                producer.poll(0.05)
        sent += 1
        if rate > 0 and sent % PACE_CHUNK == 0:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                producer.poll(ahead)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        raise KafkaException(f"{remaining} messages still undelivered to {topic} after 60 s")
    if failures:
        raise KafkaException(f"{len(failures)} of {sent} messages failed: {[f for f in failures if f][:3]}")
    elapsed = time.monotonic() - started
    log.info("produced %d messages to %s in %.1fs (%.0f msg/s)", delivered, topic, elapsed,
             delivered / elapsed if elapsed else 0)
    return delivered
