"""Curate: one row per transaction_id by the documented rule, MERGEd into the curated Delta table;
reruns change nothing; time travel and history on curated."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal

import pytest

from fluxo.contract import TRANSACTION
from fluxo.transforms.curate import best_copies, curate_stats, has_copies, merge_source, merge_staged, read_days

T0 = datetime(2026, 11, 26, 23, 0, 0)
T1 = datetime(2026, 11, 27, 1, 0, 0)


def txn(tid, source="s3", ingested_at=T0, batch_id="b1", event_ts=datetime(2026, 11, 26, 12, 0), amount="10.00", **kw):
    row = {
        "transaction_id": tid,
        "source": source,
        "event_ts": event_ts,
        "customer_id": "C1",
        "card_token": "tok_a",
        "card_last4": "1234",
        "merchant_id": "M1",
        "mcc": "5411",
        "amount": Decimal(amount),
        "currency": "BRL",
        "amount_reporting": Decimal(amount),
        "country": "BR",
        "channel": "pos",
        "status": "approved",
        "batch_id": batch_id,
        "ingested_at": ingested_at,
    }
    row.update(kw)
    return tuple(row[c] for c in TRANSACTION.names)


@pytest.fixture(scope="module")
def frame(spark):
    return lambda rows: spark.createDataFrame(rows, TRANSACTION.spark_schema())


DAY = "2026-11-26"


def kept(df):
    return {r["transaction_id"]: r for r in df.collect()}


@pytest.fixture()
def table(tmp_path):
    return str(tmp_path / "curated" / "transactions")


def curate(spark, uri, staged, run="r"):
    """What glue_scripts/curate.py does with a staged frame."""
    from fluxo.transforms._common import touched_event_dates

    dates = touched_event_dates(staged)
    merged = merge_staged(spark, uri, staged, dates, {"stage": "curate", "ingest_date": DAY, "run_id": run})
    return curate_stats(merged, dates)


def rows(spark, uri, days=("2026-11-25", "2026-11-26", "2026-11-27"), version=None):
    return sorted(tuple(str(v) for v in r) for r in read_days(spark, uri, list(days), version).collect())


def test_dedupe_rule_earliest_then_source_priority_then_batch(frame):
    staged = frame([
        # earliest ingested_at wins even over a higher-priority source
        txn("a", source="s3", ingested_at=T0, amount="1.00"),
        txn("a", source="api", ingested_at=T1, amount="2.00"),
        # same ingested_at: api > db > kafka > s3
        txn("b", source="s3", amount="1.00"),
        txn("b", source="kafka", amount="2.00"),
        txn("b", source="db", amount="3.00"),
        # same ingested_at and source: smallest batch_id
        txn("c", batch_id="b9", amount="1.00"),
        txn("c", batch_id="b10", amount="2.00"),
        # everything else equal: the other columns in contract order, so the smaller amount wins
        txn("d", amount="7.00"),
        txn("d", amount="3.00"),
    ])
    best = kept(best_copies(staged))
    assert best["a"]["amount"] == Decimal("1.00")
    assert best["b"]["source"] == "db"
    assert best["c"]["batch_id"] == "b10"  # string order: "b10" < "b9"
    assert best["d"]["amount"] == Decimal("3.00")


def test_the_merge_source_skips_the_window_only_when_every_id_is_unique(frame):
    unique = frame([txn("a"), txn("b", amount="2.00")])
    copies = frame([txn("a"), txn("a", source="api", ingested_at=T1), txn("b")])
    assert not has_copies(unique) and has_copies(copies)
    # the same rows, event_date included, whichever way they come
    assert sorted(merge_source(unique).collect()) == sorted(best_copies(unique).collect())
    assert sorted(merge_source(copies).collect()) == sorted(best_copies(copies).collect())
    assert sorted(kept(merge_source(copies))) == ["a", "b"]


def test_the_merge_applies_the_same_rule_against_curated_rows(spark, frame, table):
    # the MERGE condition is the dedupe rule as one struct comparison: a copy that comes first
    # by best_copies must also replace a curated copy, and never the other way round
    first = curate(spark, table, frame([txn("a", source="s3", amount="1.00"), txn("b", batch_id="b9")]))
    assert (first["curated_new"], first["already_curated"]) == (2, 0)
    curate(spark, table, frame([txn("a", source="api", amount="2.00"), txn("b", batch_id="b10")]))
    now = kept(read_days(spark, table, [DAY]))
    assert now["a"]["source"] == "api" and now["b"]["batch_id"] == "b10"


def test_existing_curated_copy_wins_over_a_later_redelivery(spark, frame, table):
    curate(spark, table, frame([txn("x", ingested_at=T0, amount="5.00"), txn("y", ingested_at=T0)]))
    stats = curate(spark, table, frame([txn("x", source="api", ingested_at=T1, amount="6.00"), txn("z", ingested_at=T1)]))
    now = kept(read_days(spark, table, [DAY]))
    assert sorted(now) == ["x", "y", "z"]
    assert now["x"]["amount"] == Decimal("5.00") and now["x"]["source"] == "s3"
    assert stats == {
        "stage": "curate", "staged": 2, "already_curated": 1, "replaced": 0, "curated_new": 1,
        "dates": [DAY], "version": 2,
    }


def test_reruns_leave_identical_content(spark, frame, table):
    staged = frame([
        txn("a"), txn("a", source="api", ingested_at=T1), txn("b", event_ts=datetime(2026, 11, 25, 23, 59, 59)),
        txn("c", event_ts=datetime(2026, 11, 26, 0, 0, 0)),
    ])
    curate(spark, table, staged)
    first = rows(spark, table)
    for _ in range(3):
        stats = curate(spark, table, staged)
        assert rows(spark, table) == first
        assert (stats["curated_new"], stats["already_curated"], stats["replaced"]) == (0, 3, 0)


def test_event_date_is_the_utc_day_and_columns_follow_contract(spark, frame, table):
    curate(spark, table, frame([txn("late", event_ts=datetime(2026, 11, 26, 23, 59, 59))]))
    stored = spark.read.format("delta").load(table)
    assert stored.columns == [*TRANSACTION.names, "event_date"]
    (row,) = stored.collect()
    assert row["event_date"] == date(2026, 11, 26)
    assert [c for c in spark.sql(f"DESCRIBE DETAIL delta.`{table}`").first()["partitionColumns"]] == ["event_date"]


D1, D2, D3 = datetime(2026, 11, 25, 10, 0), datetime(2026, 11, 26, 10, 0), datetime(2026, 11, 27, 10, 0)


def test_an_earlier_copy_moves_a_transaction_between_touched_days(spark, frame, table):
    curate(spark, table, frame([txn("a", event_ts=D1), txn("b", event_ts=D2)]))
    # an earlier-landed copy of "a" dated day 2 wins over the day-1 copy: day 1 is left empty
    earlier = datetime(2026, 11, 26, 0, 0)
    stats = curate(spark, table, frame([txn("a", event_ts=D2, ingested_at=earlier), txn("c", event_ts=D1, ingested_at=T1)]))
    assert stats["replaced"] == 1 and stats["curated_new"] == 1
    assert [(r[0], r[2][:10]) for r in rows(spark, table)] == [("a", "2026-11-26"), ("b", "2026-11-26"), ("c", "2026-11-25")]


def test_time_travel_and_history_on_curated(spark, frame, table):
    from fluxo.delta_tables import history as table_history

    curate(spark, table, frame([txn("a", event_ts=D1)]), run="run-1")
    v1 = rows(spark, table)
    curate(spark, table, frame([txn("b", event_ts=D1, ingested_at=T1)]), run="run-2")
    history = table_history(spark, table)
    merges = [h for h in history if h["operation"] == "MERGE"]
    assert [json.loads(h["userMetadata"])["run_id"] for h in merges] == ["run-2", "run-1"]  # lineage, newest first
    assert rows(spark, table, version=merges[1]["version"]) == v1
    as_of = spark.read.format("delta").option("timestampAsOf", str(merges[1]["timestamp"])).load(table)
    assert sorted(r["transaction_id"] for r in as_of.collect()) == ["a"]
    assert sorted(r[0] for r in rows(spark, table)) == ["a", "b"]
