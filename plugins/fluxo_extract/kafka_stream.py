"""Land the Kafka `transactions` topic into the raw zone, committing offsets only after the landing.

One run = one landing batch (`raw/kafka/ingest_date=D/batch=B/part-NNNNN.jsonl`, one file per
micro-batch of `consume()`), then, in this order (the protocol of `landing.py`):

1. publish the batch to the raw zone;
2. `ExtractState.confirm`: the batch row and the watermark (next offset per partition) in one
   warehouse transaction;
3. a synchronous commit of exactly the landed offsets to the broker (consumer group of the
   connection, auto-commit off).

The run assigns itself every partition of the topic (no group membership, so no join and no
rebalance); the group only keeps the committed offsets, which Kafka accepts while no member of
the group is subscribed. A consumer subscribed with the same group id makes the commit fail,
after the landing is confirmed: the next run catches the offsets up (below).

Where a run starts, per partition: an explicit replay (`replay_from_offsets`, or
`replay_from_timestamp` through `offsets_for_times`), otherwise the later of the group's committed
offset and the durable watermark. Because the watermark is confirmed with the batch, a crash
between 2 and 3 does not land those messages again (the next run also catches the group's
offsets up to the watermark); a crash between 1 and 2 (published, not confirmed) lands them again
in a new batch (at-least-once), and curate keeps one row per transaction_id. Replays always land
into a new batch; the watermark and the commit never move backwards. One run at a time per topic
and group (the DAG task must not run concurrently with itself).

The broker's end offsets are never asked (the local broker's ListOffsets answers are wrong): a run
stops when every assigned partition reported its end (librdkafka's partition EOF, from the fetch
responses) after its last message, or when no message arrived for `idle_seconds` (the fallback),
or after `max_messages`. Messages produced after a partition's end wait for the next run.

Each raw line is an envelope
`{"topic": str, "partition": int, "offset": int, "timestamp": int (epoch ms, the message's
create time), "key": str | null, "value": str | null}` where `value` is the message value exactly
as sent (a malformed JSON value lands as-is and standardize quarantines it). A value that is not
UTF-8 cannot be carried in a JSON text without altering it, so it is quarantined here
(`malformed_record`, stage=extract) with the topic/partition/offset in its detail; its offset still
counts as consumed, so landed + quarantined = messages read. A key that is not UTF-8 lands with
U+FFFD replacements (keys are informational; the transaction_id inside the value is what counts).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from json.encoder import encode_basestring as json_string  # the C encoder: escapes without a dict round trip

from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from fluxo.lake import Lake
from fluxo_platform.settings import get_settings
from fluxo_extract.landing import ExtractState, LandingBatch
from fluxo_platform.warehouse import warehouse_connection

log = logging.getLogger(__name__)

SOURCE = "kafka"
DEFAULT_TOPIC = "transactions"
# Settings a landing consumer needs whatever the connection says: nothing is acknowledged
# behind our back, and every partition reports its end. Reading from the start applies only to a
# group that never committed.
CONSUMER_OVERRIDES = {"enable.auto.commit": False, "enable.auto.offset.store": False, "enable.partition.eof": True}
CLUSTER_KEY = "cluster_id"  # in the watermark beside the partition offsets
CONSUMER_DEFAULTS = {"auto.offset.reset": "earliest", "log_level": 4}
CRASH_POINTS = ("before_confirm", "before_commit")


class SimulatedCrash(RuntimeError):
    """Raised by `simulate_crash` to stop a run where a killed worker would stop."""


class LandingConsumerHook(KafkaConsumerHook):
    """The provider's consumer hook (connection extra = librdkafka config), with manual commits."""

    def __init__(self, topics, kafka_config_id: str, group_id: str | None = None) -> None:
        super().__init__(topics=topics, kafka_config_id=kafka_config_id)
        self.group_id = group_id

    def _get_client(self, config) -> Consumer:
        config = {**CONSUMER_DEFAULTS, **config, **CONSUMER_OVERRIDES}
        if self.group_id:
            config["group.id"] = self.group_id
        if not config.get("group.id"):
            raise ValueError(f"connection {self.kafka_config_id!r} has no group.id: offsets need a consumer group")
        return super()._get_client(config)


def _epoch_ms(moment: str) -> int:
    parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


def start_offsets(consumer: Consumer, topic: str, watermark: dict | None,
                  replay_from_offsets: dict | None = None, replay_from_timestamp: str | None = None,
                  timeout: float = 15.0) -> tuple[dict[int, int], dict[int, int], dict[int, int], str]:
    """Per partition: (where this run starts, where a normal run resumes, the group's committed offset),
    and the broker's cluster id.

    -1 in the last two means nothing was ever landed/committed for that partition.

    A watermark confirmed on another cluster (its `cluster_id` differs from the broker's) says
    nothing about this cluster's offsets: it is set aside with a warning and the run resumes
    from the group's committed offsets, or the beginning. Curate keeps one row per
    transaction, so what lands again is not doubled."""
    cluster = consumer.list_topics(topic, timeout=timeout)
    metadata = cluster.topics[topic]
    if metadata.error is not None:
        raise KafkaException(metadata.error)
    landed_on = (watermark or {}).get(CLUSTER_KEY)
    if landed_on is not None and landed_on != cluster.cluster_id:
        log.warning("watermark of %s was confirmed on Kafka cluster %r, the broker is cluster %r: "
                    "ignoring it (topic offsets do not carry over between clusters)", topic, landed_on,
                    cluster.cluster_id)
        watermark = None
    partitions = sorted(metadata.partitions)
    committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
    group_offsets = {tp.partition: (tp.offset if tp.offset >= 0 else -1) for tp in committed}
    resume = {p: max(o, int((watermark or {}).get(str(p), -1))) for p, o in group_offsets.items()}
    start = {p: (o if o >= 0 else OFFSET_BEGINNING) for p, o in resume.items()}
    if replay_from_offsets:
        unknown = {int(p) for p in replay_from_offsets} - set(partitions)
        if unknown:
            raise ValueError(f"topic {topic} has no partitions {sorted(unknown)} (it has {partitions})")
        start.update({int(p): int(o) for p, o in replay_from_offsets.items()})
    elif replay_from_timestamp:
        wanted = [TopicPartition(topic, p, _epoch_ms(replay_from_timestamp)) for p in partitions]
        for tp in consumer.offsets_for_times(wanted, timeout=timeout):
            if tp.error is not None:
                raise KafkaException(tp.error)
            if tp.offset >= 0:  # -1: nothing at or after the timestamp in this partition
                start[tp.partition] = tp.offset
    return start, resume, group_offsets, cluster.cluster_id


def _envelopes(messages: list, topic_json: str, batch: LandingBatch,
               at_end: set[int]) -> tuple[list[str], dict[int, int], int]:
    """JSON lines for one micro-batch, the last offset seen per partition and the number of messages
    (quarantines non-UTF-8 values). `at_end` gains the partitions whose end was reported after
    their last message, and loses those a message came from."""
    lines: list[str] = []
    append = lines.append
    last: dict[int, int] = {}
    count = 0
    prefix = '{"topic": ' + topic_json + ', "partition": '
    for message in messages:
        if message.error() is not None:
            if message.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(message.partition())
                continue
            raise KafkaException(message.error())
        partition, offset, key, value = message.partition(), message.offset(), message.key(), message.value()
        at_end.discard(partition)
        last[partition] = offset
        count += 1
        if value is not None:
            try:
                value = json_string(value.decode())
            except UnicodeDecodeError as exc:
                batch.quarantine("malformed_record", value,
                                 f"{message.topic()}/{partition}@{offset}: message value is not UTF-8 ({exc.reason})")
                continue
        else:
            value = "null"
        key = "null" if key is None else json_string(key.decode(errors="replace"))
        append(f'{prefix}{partition}, "offset": {offset}, "timestamp": {message.timestamp()[1]}, '
               f'"key": {key}, "value": {value}}}')
    return lines, last, count


def land_kafka(ingest_date: str, conn_id: str = "fluxo_kafka", topic: str = DEFAULT_TOPIC,
               max_messages: int = 1_000_000, idle_seconds: float = 5.0,
               replay_from_offsets: dict | None = None, replay_from_timestamp: str | None = None,
               *, micro_batch: int = 50_000, group_id: str | None = None,
               simulate_crash: str | None = None) -> dict:
    """Consume `topic` until idle (or `max_messages`), land it as one raw batch, confirm, then commit.

    `replay_from_offsets` maps partition -> first offset to read again (other partitions resume
    normally); `replay_from_timestamp` (ISO-8601, UTC if naive) replays every partition from the
    first message at or after it. `simulate_crash` ("before_confirm" | "before_commit") stops the
    run at that point, as a killed worker would (for tests and drills). `group_id` overrides the
    connection's group. The warehouse is the pipeline's `fluxo_warehouse` connection.
    Returns {batch_id (None when nothing was read), messages, landed, quarantined, partitions,
    committed (partition -> offset committed by this run), timings}.
    """
    if simulate_crash not in (None, *CRASH_POINTS):
        raise ValueError(f"simulate_crash must be one of {CRASH_POINTS}")
    if replay_from_offsets and replay_from_timestamp:
        raise ValueError("replay from offsets or from a timestamp, not both")
    settings = get_settings()
    stream = topic
    batch = LandingBatch(Lake(settings.lake_root), SOURCE, ingest_date)
    started = time.monotonic()

    with warehouse_connection() as conn:
        state = ExtractState(conn)
        watermark = state.watermark(SOURCE, stream) or {}
        hook = LandingConsumerHook([topic], kafka_config_id=conn_id, group_id=group_id)
        consumer = hook.get_conn
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-landing-writer")
        try:
            start, resume, group_offsets, cluster_id = start_offsets(
                consumer, topic, watermark, replay_from_offsets, replay_from_timestamp)
            # Every partition assigned by this run, at the offsets above: no group join (the local
            # broker's first join took 3 s of a 4 s landing). The group only keeps the offsets.
            consumer.assign([TopicPartition(topic, p, o) for p, o in sorted(start.items())])
            assigned_at = time.monotonic()
            log.info("assigned %s", start)
            at_end: set[int] = set()  # partitions whose end was reported after their last message
            last: dict[int, int] = {}
            read = 0
            last_message_at = first_message_at = 0.0
            topic_json = json_string(topic)
            parts, pending = 0, None
            spent = {"consume_s": 0.0, "envelopes_s": 0.0, "write_wait_s": 0.0}
            stopped = "max_messages"
            while read < max_messages:
                asked = time.monotonic()
                messages = consumer.consume(num_messages=min(micro_batch, max_messages - read), timeout=1.0)
                now = time.monotonic()
                spent["consume_s"] += now - asked
                lines, seen, count = _envelopes(messages, topic_json, batch, at_end)
                if count:
                    last_message_at = now
                    first_message_at = first_message_at or now
                    read += count
                    last.update(seen)
                if lines:
                    lines.append("")
                    body = "\n".join(lines).encode()
                    tick = time.monotonic()
                    spent["envelopes_s"] += tick - now
                    # Write while the next micro-batch is consumed; at most one write in flight.
                    if pending is not None:
                        pending.result()
                    pending = writer.submit(batch.write, f"part-{parts:05d}.jsonl", body, len(lines) - 1)
                    parts += 1
                    spent["write_wait_s"] += time.monotonic() - tick
                if start.keys() <= at_end:  # every partition's end came after its last message
                    stopped = "end of every partition"
                    break
                if now - max(last_message_at, assigned_at) >= idle_seconds:
                    stopped = f"idle for {idle_seconds:g}s"
                    break
            if pending is not None:
                pending.result()

            landed_next = {p: o + 1 for p, o in last.items()}
            # Never move the watermark or the group's offsets backwards (a replay re-reads old offsets).
            new_watermark = {p: o for p, o in resume.items() if o >= 0}
            for p, o in landed_next.items():
                new_watermark[p] = max(new_watermark.get(p, 0), o)
            if read:
                counts = batch.publish()
                if simulate_crash == "before_confirm":
                    raise SimulatedCrash(f"{batch.batch_id} published, not confirmed, offsets not committed")
                replay = ({"replay_from_offsets": {str(p): o for p, o in replay_from_offsets.items()}}
                          if replay_from_offsets else
                          {"replay_from_timestamp": replay_from_timestamp} if replay_from_timestamp else {})
                state.confirm(batch, stream, {**{str(p): o for p, o in sorted(new_watermark.items())},
                                              CLUSTER_KEY: cluster_id},
                              {"messages": read, "start_offsets": {str(p): o for p, o in start.items()},
                               "end_offsets": {str(p): o for p, o in landed_next.items()}, **replay})
                if simulate_crash == "before_commit":
                    raise SimulatedCrash(f"{batch.batch_id} confirmed, offsets not committed")
            else:
                counts = {"landed": 0, "quarantined": 0}
            # Also catches the group up where an earlier run confirmed but died before committing.
            committed = {p: o for p, o in new_watermark.items() if o > group_offsets.get(p, -1)}
            if committed:
                try:
                    result = consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in committed.items()],
                                             asynchronous=False)
                except KafkaException as exc:
                    hint = (" (a consumer is subscribed with this run's group id: the landing needs a group of"
                            " its own)" if exc.args and exc.args[0].code() == KafkaError.UNKNOWN_MEMBER_ID else "")
                    raise KafkaException(f"offset commit failed after landing {batch.batch_id}: {exc}{hint}") from exc
                failed = [tp for tp in result or [] if tp.error is not None]
                if failed:
                    raise KafkaException(f"offset commit failed after landing {batch.batch_id}: {failed}")
        finally:
            writer.shutdown(wait=True)
            consumer.close()

    elapsed = time.monotonic() - started
    timings = {"assign_s": round(assigned_at - started, 3),
               "first_message_s": round(first_message_at - started, 3) if read else None,
               "total_s": round(elapsed, 3), **{k: round(v, 3) for k, v in spent.items()}}
    log.info("read %d messages from %s in %.1fs (stopped at the %s): %d landed, %d quarantined (batch %s); "
             "committed %s", read, topic, elapsed, stopped, counts["landed"], counts["quarantined"],
             batch.batch_id if read else None, committed)
    return {"batch_id": batch.batch_id if read else None, "messages": read, "landed": counts["landed"],
            "quarantined": counts["quarantined"], "partitions": len(landed_next),
            "committed": {str(p): o for p, o in sorted(committed.items())}, "stopped": stopped, "timings": timings}
