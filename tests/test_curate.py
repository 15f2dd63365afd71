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
        "dates": ["2026-11-26"],
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


# --- atomic replacement of curated partitions -------------------------------------------------

D1, D2, D3 = datetime(2026, 11, 25, 10, 0), datetime(2026, 11, 26, 10, 0), datetime(2026, 11, 27, 10, 0)


def snapshot(spark, root: str) -> list[tuple]:
    """Every curated row (and its partition) as text, sorted; files under _/. names are not data."""
    from fluxo.glue_runtime import path_exists

    if not path_exists(spark, root):
        return []
    df = spark.read.parquet(root)
    return sorted(tuple(str(v) for v in r) for r in df.select(*TRANSACTION.names, "event_date").collect())


def run_curate(spark, frame, lake_root: str, staged_rows, fault=None):
    """The curate stage's steps (glue_scripts/curate.py) in process."""
    from fluxo.transforms._common import touched_event_dates
    from fluxo.transforms.curate import read_partitions, recover, replace_partitions

    root, work = f"{lake_root}/curated/transactions", f"{lake_root}/work/curate"
    recover(spark, root, work)
    staged = frame(staged_rows)
    dates = touched_event_dates(staged)
    merged = merge(staged, read_partitions(spark, root, dates))
    merged.ranked.cache()
    try:
        return replace_partitions(spark, merged.curated, root, work, dates, fault=fault)
    finally:
        merged.ranked.unpersist()


def test_failed_runs_leave_old_data_or_are_finished_by_the_retry(spark, frame, tmp_path):
    from fluxo.transforms.curate import CurateFault

    lake, root = str(tmp_path), str(tmp_path / "curated" / "transactions")
    run_curate(spark, frame, lake, [txn("a", event_ts=D1), txn("b", event_ts=D2), txn("c", event_ts=D3)])
    before = snapshot(spark, root)
    assert len(before) == 3
    # day 2: new rows in three partitions, and "b" moves to day 3 in a later, losing copy
    day2 = [txn("d", event_ts=D1, ingested_at=T1), txn("e", event_ts=D2, ingested_at=T1),
            txn("f", event_ts=D3, ingested_at=T1), txn("b", event_ts=D3, ingested_at=T1, source="api")]

    with pytest.raises(CurateFault):
        run_curate(spark, frame, lake, day2, fault="before_commit")
    assert snapshot(spark, root) == before  # staging written, nothing committed: old data intact
    assert (tmp_path / "work" / "curate" / "staging").exists()

    with pytest.raises(CurateFault):
        run_curate(spark, frame, lake, day2, fault="after_partitions:1")
    partial = snapshot(spark, root)
    assert partial != before and {r[0] for r in partial} >= {"a", "b", "c", "d"}

    result = run_curate(spark, frame, lake, day2)  # the retry: recovery, then the day again
    after = snapshot(spark, root)
    ids = [r[0] for r in after]
    assert sorted(ids) == ["a", "b", "c", "d", "e", "f"]  # nothing lost, nothing doubled
    assert [r for r in after if r[0] == "b"] == [r for r in before if r[0] == "b"]  # earlier copy stays
    assert result["partitions"] == ["event_date=2026-11-25", "event_date=2026-11-26", "event_date=2026-11-27"]
    for folder in ("staging", "journal"):  # nothing left over
        assert list((tmp_path / "work" / "curate" / folder).iterdir()) == []

    for _ in range(3):  # reruns of the same day: identical content, one data file set per partition
        run_curate(spark, frame, lake, day2)
        assert snapshot(spark, root) == after
    for partition in (tmp_path / "curated" / "transactions").iterdir():
        assert len([f for f in partition.iterdir() if f.suffix == ".parquet"]) == 1


def test_a_committed_run_is_finished_by_recovery_alone(spark, frame, tmp_path):
    from fluxo.transforms.curate import CurateFault, recover

    lake, root = str(tmp_path), str(tmp_path / "curated" / "transactions")
    run_curate(spark, frame, lake, [txn("a", event_ts=D1), txn("b", event_ts=D2)])
    # an earlier-landed copy of "a" on day 2 wins over both day-1 copies: day 1 ends up empty (removed)
    earlier = datetime(2026, 11, 26, 0, 0)
    with pytest.raises(CurateFault):
        run_curate(spark, frame, lake, [txn("a", event_ts=D2, ingested_at=earlier), txn("a", event_ts=D1, ingested_at=T1)],
                   fault="after_partitions:0")
    done = recover(spark, root, str(tmp_path / "work" / "curate"))
    assert len(done["finished"]) == 1 and done["discarded"] == []
    rows = snapshot(spark, root)
    assert [(r[0], r[-1]) for r in rows] == [("a", "2026-11-26"), ("b", "2026-11-26")]
    assert not (tmp_path / "curated" / "transactions" / "event_date=2026-11-25").exists()
