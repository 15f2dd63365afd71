"""Kafka landing against the real local broker: incremental runs, a crash before the commit, replays.

Every test uses a topic (and consumer group) of its own, so runs never see each other's messages.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from fluxo.lake import Lake
from fluxo_platform.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "plugins"))

from fluxo_extract.kafka_stream import CLUSTER_KEY, SimulatedCrash, land_kafka  # noqa: E402

INGEST_DATE = "2026-02-01"
PARTITIONS = 3
IDLE = 2.0


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> dict[str, list[str]]:
    """Generator event lines per day (two small days, with its planted defects)."""
    from fluxo_dev.generator import generate

    out = tmp_path_factory.mktemp("kafka-gen")
    generate(out, date(2026, 1, 1), 2, 1200, seed=11, sources=("kafka",))
    days = {p.parent.name.removeprefix("dt="): p.read_text().splitlines()
            for p in sorted(out.glob("kafka/dt=*/events.jsonl"))}
    return {"dir": out, **days}


@pytest.fixture
def topic(stack_env, warehouse_url) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"transactions-test-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack_env["FLUXO_KAFKA_BOOTSTRAP"], "log_level": 4})
    for future in admin.create_topics([NewTopic(name, PARTITIONS, 1)], request_timeout=10).values():
        future.result(timeout=15)
    return name


def produce(lines, topic: str) -> int:
    from fluxo_platform.settings import get_settings
    from fluxo_dev.streaming import produce as produce_lines

    return produce_lines(lines, get_settings().kafka_bootstrap, topic)


def land(topic: str, **kwargs) -> dict:
    return land_kafka(INGEST_DATE, topic=topic, idle_seconds=IDLE, group_id=f"fluxo-{topic}", **kwargs)


def landed_envelopes(result: dict) -> list[dict]:
    from fluxo_platform.settings import get_settings

    batch_dir = Path(Lake(get_settings().lake_root).raw("kafka", INGEST_DATE, result["batch_id"]))
    return [json.loads(line) for part in sorted(batch_dir.glob("part-*.jsonl")) for line in part.read_text().splitlines()]


def group_offsets(topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    from fluxo_platform.settings import get_settings

    consumer = Consumer({"bootstrap.servers": get_settings().kafka_bootstrap, "group.id": f"fluxo-{topic}",
                         "log_level": 4})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
    finally:
        consumer.close()


def stored_watermark(topic: str) -> dict | None:
    import psycopg

    from fluxo_platform.settings import get_settings

    with psycopg.connect(get_settings().database_url) as conn:
        row = conn.execute("SELECT value FROM extract.watermark WHERE source = 'kafka' AND stream = %s",
                           (topic,)).fetchone()
    return row[0] if row else None


def watermark(topic: str) -> dict | None:
    """The stored next offset per partition (without the cluster id beside them)."""
    stored = stored_watermark(topic)
    return None if stored is None else {p: o for p, o in stored.items() if p != CLUSTER_KEY}


def transaction_ids(lines) -> set[str]:
    ids = set()
    for line in lines:
        try:
            ids.add(json.loads(line)["payload"]["transaction_id"])
        except (ValueError, KeyError, TypeError):
            pass
    ids.discard(None)
    return ids


def offsets_by_partition(envelopes: list[dict]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for e in envelopes:
        found.setdefault(e["partition"], []).append(e["offset"])
    return {p: sorted(o) for p, o in found.items()}


def test_two_runs_land_only_new_messages_and_commit_after_landing(events, topic):
    day1, day2 = events["2026-01-01"], events["2026-01-02"]
    assert produce(day1, topic) == len(day1)

    first = land(topic)
    assert first["messages"] == first["landed"] == len(day1) and first["quarantined"] == 0
    # the fetch responses' end of partition stops the run, not idle_seconds of waiting for nothing
    assert first["stopped"] == "end of every partition"
    envelopes = landed_envelopes(first)
    # every value lands exactly as produced, malformed ones included, with its key
    assert sorted(e["value"] for e in envelopes) == sorted(day1)
    assert {e["key"] for e in envelopes if e["key"]} == transaction_ids(day1)
    assert any(e["key"] is None for e in envelopes)  # the generator's malformed lines have no key
    spans = offsets_by_partition(envelopes)
    assert all(offsets == list(range(len(offsets))) for offsets in spans.values())
    end = {p: len(o) for p, o in spans.items()}
    assert group_offsets(topic) == end == {int(p): o for p, o in first["committed"].items()}
    assert watermark(topic) == {str(p): o for p, o in end.items()}

    not_utf8 = b'{"event_id": "x", "payload": {"transaction_id": "caf\xe9"}}'
    from confluent_kafka import Producer

    from fluxo_platform.settings import get_settings

    producer = Producer({"bootstrap.servers": get_settings().kafka_bootstrap, "log_level": 4})
    producer.produce(topic, value=not_utf8, partition=0)
    producer.flush(10)
    assert produce(day2, topic) == len(day2)

    second = land(topic)
    assert second["batch_id"] != first["batch_id"]
    assert second["messages"] == len(day2) + 1
    assert (second["landed"], second["quarantined"]) == (len(day2), 1)
    second_envelopes = landed_envelopes(second)
    assert sorted(e["value"] for e in second_envelopes) == sorted(day2)
    for p, offsets in offsets_by_partition(second_envelopes).items():
        assert offsets[0] >= end[p]  # nothing of the first run again
    quarantine = Path(Lake(get_settings().lake_root).quarantine(INGEST_DATE, "extract")) / "source=kafka"
    rows = [json.loads(line) for line in (quarantine / f"{second['batch_id']}.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rows] == ["malformed_record"]
    assert f"{topic}/0@" in rows[0]["detail"] and "caf" in rows[0]["raw_record"]

    third = land(topic)
    assert third["messages"] == 0 and third["batch_id"] is None
    assert third["stopped"] == "end of every partition"


def test_crash_before_commit_loses_nothing_and_lands_nothing_twice(events, topic):
    day1, day2 = events["2026-01-01"], events["2026-01-02"]
    produce(day1, topic)
    with pytest.raises(SimulatedCrash):
        land(topic, simulate_crash="before_commit")
    assert group_offsets(topic) == {}  # landed and confirmed, never acknowledged to the broker
    confirmed = watermark(topic)
    assert sum(confirmed.values()) == len(day1)

    produce(day2, topic)
    rerun = land(topic)  # resumes from the confirmed watermark, then catches the group up
    assert rerun["messages"] == len(day2)
    assert group_offsets(topic) == {int(p): o for p, o in watermark(topic).items()}
    assert sum(group_offsets(topic).values()) == len(day1) + len(day2)

    # A crash after publishing but before confirming: that batch sits in the raw zone unconfirmed,
    # and the rerun lands its messages again (at-least-once); curate keeps one row per transaction_id.
    more = day1[:50]
    produce(more, topic)
    with pytest.raises(SimulatedCrash):
        land(topic, simulate_crash="before_confirm")
    again = land(topic)
    assert again["messages"] == len(more)

    from fluxo_platform.settings import get_settings

    raw = Path(Lake(get_settings().lake_root).raw("kafka", INGEST_DATE))
    envelopes = [json.loads(line) for part in raw.glob("batch=*/part-*.jsonl") for line in part.read_text().splitlines()
                 if f'"topic": "{topic}"' in line]
    produced = day1 + day2 + more
    covered = offsets_by_partition(envelopes)
    assert sum(len(set(o)) for o in covered.values()) == len(produced)  # every produced offset landed
    assert all(sorted(set(o)) == list(range(len(set(o)))) for o in covered.values())
    assert sum(len(o) for o in covered.values()) == len(produced) + len(more)  # only the unconfirmed batch twice
    assert transaction_ids(e["value"] for e in envelopes) == transaction_ids(produced)


def test_replay_from_offsets_and_from_timestamp(events, topic):
    day1, day2 = events["2026-01-01"], events["2026-01-02"]
    produce(day1, topic)
    time.sleep(1.0)
    boundary = datetime.now(timezone.utc)
    time.sleep(1.0)
    from fluxo_dev.streaming.__main__ import main as producer_cli

    # the command line, with the bootstrap from the settings (the stack's environment), paced
    paced = time.monotonic()
    assert producer_cli(["produce", "--data", str(events["dir"]), "--days", "2026-01-02", "--rate", "2000",
                         "--topic", topic]) == 0
    assert time.monotonic() - paced >= (len(day2) // 500 * 500) / 2000
    everything = landed_envelopes(land(topic))
    assert len(everything) == len(day1) + len(day2)
    mark = watermark(topic)

    replay = land(topic, replay_from_offsets={0: 5})
    envelopes = landed_envelopes(replay)
    assert {e["partition"] for e in envelopes} == {0}
    assert [e["offset"] for e in envelopes] == list(range(5, mark["0"]))
    assert watermark(topic) == mark  # a replay never moves progress backwards
    assert group_offsets(topic) == {int(p): o for p, o in mark.items()}

    after = [e for e in everything if e["timestamp"] >= boundary.timestamp() * 1000]
    assert sorted(e["value"] for e in after) == sorted(day2)
    replay = land(topic, replay_from_timestamp=boundary.isoformat())
    assert replay["messages"] == len(day2)
    assert sorted(e["value"] for e in landed_envelopes(replay)) == sorted(day2)
    assert land(topic)["messages"] == 0


def test_a_watermark_confirmed_on_another_cluster_is_set_aside(events, topic, caplog):
    """A recreated broker (the local stack's tansu keeps topics in memory) is a new cluster whose
    topics start again at offset 0: the old watermark would skip everything produced to it."""
    import psycopg

    from fluxo_platform.settings import get_settings

    day1 = events["2026-01-01"]
    produce(day1, topic)
    land(topic)
    cluster = stored_watermark(topic)[CLUSTER_KEY]
    assert cluster, "the watermark records the cluster it was confirmed on"

    gone = {**{str(p): 10_000_000 for p in range(PARTITIONS)}, CLUSTER_KEY: "a-cluster-that-is-gone"}
    with psycopg.connect(get_settings().database_url) as conn:
        conn.execute("UPDATE extract.watermark SET value = %s WHERE source = 'kafka' AND stream = %s",
                     (json.dumps(gone), topic))
    # a group the broker never saw, as after a broker restart: only the watermark says where to start
    again = land_kafka(INGEST_DATE, topic=topic, idle_seconds=IDLE, group_id=f"fluxo-{topic}-new-cluster")
    assert again["messages"] == len(day1), "everything on the new cluster lands (curate drops repeats)"
    assert "confirmed on Kafka cluster 'a-cluster-that-is-gone'" in caplog.text
    assert stored_watermark(topic)[CLUSTER_KEY] == cluster
    assert sum(watermark(topic).values()) == len(day1)


def test_a_consumer_subscribed_with_the_landing_group_fails_the_commit_and_loses_nothing(events, topic):
    """The landing assigns itself every partition (no group join); a member subscribed with its group id
    makes the broker refuse the commit. The batch is already confirmed, so the next run lands nothing twice
    and catches the group's offsets up."""
    from confluent_kafka import Consumer, KafkaException

    from fluxo_platform.settings import get_settings

    day1 = events["2026-01-01"]
    produce(day1, topic)
    member = Consumer({"bootstrap.servers": get_settings().kafka_bootstrap, "group.id": f"fluxo-{topic}",
                       "session.timeout.ms": 6000, "enable.auto.commit": False, "log_level": 4})
    member.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(0.2)
        assert member.assignment(), "the member never joined its group"
        with pytest.raises(KafkaException, match="a consumer is subscribed with this run's group id"):
            land(topic)
    finally:
        member.close()
    assert group_offsets(topic) == {}
    assert sum(watermark(topic).values()) == len(day1)  # confirmed before the commit was refused

    rerun = land(topic)
    assert rerun["messages"] == 0 and rerun["batch_id"] is None
    assert sum(group_offsets(topic).values()) == len(day1)
