"""curate.merge: one row per transaction_id by the documented rule, idempotent across reruns."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from fluxo.contract import TRANSACTION
from fluxo.transforms.curate import curate_stats, merge

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


def kept(merged):
    return {r["transaction_id"]: r for r in merged.curated.collect()}


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
    ])
    rows = kept(merge(staged, frame([])))
    assert rows["a"]["amount"] == Decimal("1.00")
    assert rows["b"]["source"] == "db"
    assert rows["c"]["batch_id"] == "b10"  # string order: "b10" < "b9"


def test_existing_curated_copy_wins_over_a_later_redelivery(frame):
    existing = frame([txn("x", ingested_at=T0, amount="5.00"), txn("y", ingested_at=T0)])
    staged = frame([txn("x", source="api", ingested_at=T1, amount="6.00"), txn("z", ingested_at=T1)])
    merged = merge(staged, existing)
    rows = kept(merged)
    assert sorted(rows) == ["x", "y", "z"]
    assert rows["x"]["amount"] == Decimal("5.00") and rows["x"]["source"] == "s3"
    stats = curate_stats(merged.ranked, ["2026-11-26"])
    assert stats == {
        "stage": "curate",
        "staged": 2,
        "curated_rows_in_touched_partitions": 2,
        "new_rows": 1,
        "duplicates_dropped": 1,
        "partitions": ["2026-11-26"],
    }


def test_rerun_leaves_identical_content(frame):
    staged = frame([
        txn("a"), txn("a", source="api", ingested_at=T1), txn("b", event_ts=datetime(2026, 11, 25, 23, 59, 59)),
        txn("c", event_ts=datetime(2026, 11, 26, 0, 0, 0)),
    ])
    first = merge(staged, frame([]))
    first_rows = sorted(first.curated.collect())
    # the second run reads what the first one wrote
    second = merge(staged, first.curated.drop("event_date"))
    assert sorted(second.curated.collect()) == first_rows
    stats = curate_stats(second.ranked, [])
    assert (stats["new_rows"], stats["duplicates_dropped"]) == (0, 4)


def test_event_date_is_the_utc_day_and_columns_follow_contract(frame):
    merged = merge(frame([txn("late", event_ts=datetime(2026, 11, 26, 23, 59, 59))]), frame([]))
    assert merged.curated.columns == [*TRANSACTION.names, "event_date"]
    (row,) = merged.curated.collect()
    assert row["event_date"] == date(2026, 11, 26)
