"""Every metric grain reaches the warehouse: tables match the contracts, a day reloads by
swap (three reruns -> identical rows, vanished groups go), a failed load changes nothing,
and the loaded rows reconcile with the curated rows they came from."""

from __future__ import annotations

import random
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from fluxo.contract import METRIC_GRAINS, STATUSES, TRANSACTION
from fluxo.lake import Lake
from fluxo.transforms.aggregate import GROUPED_GRAINS, daily_metrics, grain_metrics, grain_rows

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "plugins"))

INGEST_DATE = "1997-03-03"
DAYS = ("1997-03-01", "1997-03-02")


@pytest.fixture(scope="module")
def pipeline(stack_env, warehouse_url):
    from fluxo_tasks import pipeline

    return pipeline


def curated(spark, n=240, seed=5, skip_merchant=None):
    rng = random.Random(seed)
    start = datetime(1997, 3, 1)
    rows = []
    for i in range(n):
        merchant = f"M{rng.randint(1, 8)}"
        amount = Decimal(rng.randint(100, 90000)) / 100
        row = (f"x{i}", "s3", start + timedelta(seconds=rng.randint(0, 2 * 86400 - 1)), f"C{rng.randint(1, 30)}",
               "tok", None, merchant, rng.choice(("5411", "5812")), amount, "BRL", amount,
               rng.choice(("BR", "US")), rng.choice(("pos", "ecommerce")), rng.choice(STATUSES), "b1",
               start + timedelta(days=2))
        if merchant != skip_merchant:
            rows.append(row)
    return spark.createDataFrame(rows, TRANSACTION.spark_schema())


def write_metrics(spark, lake: Lake, transactions) -> None:
    """What the aggregate script writes for INGEST_DATE."""
    daily_metrics(transactions, "BRL").write.mode("overwrite").parquet(lake.metrics("daily", INGEST_DATE))
    grains = grain_metrics(transactions, "BRL").cache()
    for name in GROUPED_GRAINS:
        grain_rows(grains, name).coalesce(1).write.mode("overwrite").parquet(lake.metrics(name, INGEST_DATE))
    grains.unpersist()


def warehouse_rows(url: str) -> dict[str, list[tuple]]:
    out = {}
    with psycopg.connect(url) as conn:
        for grain, (contract, table) in METRIC_GRAINS.items():
            cols = ", ".join([*contract.names, "run_id"])
            out[grain] = conn.execute(
                f"SELECT {cols} FROM metrics.{table} WHERE event_date = ANY(%s) ORDER BY {', '.join(contract.key)}",
                (list(DAYS),),
            ).fetchall()
    return out


def load(pipeline, url, run_id):
    with psycopg.connect(url, autocommit=True) as conn:
        return pipeline.load_metrics(INGEST_DATE, run_id, conn=conn)


@pytest.mark.parametrize("grain", sorted(METRIC_GRAINS))
def test_metric_tables_and_mart_views_match_the_contracts(warehouse_url, grain):
    contract, table = METRIC_GRAINS[grain]
    with psycopg.connect(warehouse_url) as conn:
        columns = {
            schema: dict(conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s", (schema, table)).fetchall())
            for schema in ("metrics", "mart")
        }
        key = [r[0] for r in conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
            "ORDER BY array_position(i.indkey, a.attnum)", (f"metrics.{table}",)).fetchall()]
    assert set(columns["metrics"]) == {*contract.names, "run_id", "loaded_at"}
    for name, sql_type in contract.sql_types().items():
        assert columns["metrics"][name] == sql_type, f"metrics.{table}.{name}"
        assert columns["mart"][name] == sql_type, f"mart.{table}.{name}"
    assert "run_id" not in columns["mart"]
    assert key == list(contract.key)


def test_rerun_three_times_gives_identical_rows_and_a_smaller_day_swaps(spark, stack_env, pipeline, warehouse_url):
    lake = Lake(stack_env["FLUXO_LAKE_ROOT"])
    transactions = curated(spark)
    write_metrics(spark, lake, transactions)
    results, snapshots = [], []
    for _ in range(3):
        results.append(load(pipeline, warehouse_url, "rerun"))
        snapshots.append(warehouse_rows(warehouse_url))
    first = snapshots[0]
    assert snapshots[1] == first and snapshots[2] == first
    assert results[0]["grains"] == results[2]["grains"] and results[0]["metric_rows"] == 2
    assert results[2]["replaced"] == 2
    for grain, (contract, _table) in METRIC_GRAINS.items():
        keys = [row[: len(contract.key)] for row in first[grain]]
        assert len(keys) == len(set(keys)) == results[0]["grains"][grain], grain

    # reconcile: every grain's counts and totals add up to the curated rows
    n = transactions.count()
    total = sum(r["amount_reporting"] for r in transactions.select("amount_reporting").collect())
    for grain, (contract, _table) in METRIC_GRAINS.items():
        count_at = contract.names.index("transaction_count")
        total_at = contract.names.index("amount_total")
        assert sum(r[count_at] for r in first[grain]) == n, grain
        assert sum(r[total_at] for r in first[grain]) == total, grain

    # the day is recomputed without merchant M3: its rows leave the warehouse
    write_metrics(spark, lake, curated(spark, skip_merchant="M3"))
    load(pipeline, warehouse_url, "smaller")
    after = warehouse_rows(warehouse_url)
    assert first["merchant_daily"] and any(r[1] == "M3" for r in first["merchant_daily"])
    assert not any(r[1] == "M3" for r in after["merchant_daily"])
    assert {r[-1] for grain_rows_ in after.values() for r in grain_rows_} == {"smaller"}


def test_failed_load_leaves_every_grain_as_it_was(spark, stack_env, pipeline, warehouse_url):
    lake = Lake(stack_env["FLUXO_LAKE_ROOT"])
    write_metrics(spark, lake, curated(spark, seed=9))
    load(pipeline, warehouse_url, "good")
    before = warehouse_rows(warehouse_url)
    # the hourly grain (loaded last) breaks a NOT NULL column after the other grains were swapped
    bad = grain_metrics(curated(spark, seed=10), "BRL").cache()
    for name in GROUPED_GRAINS:
        frame = grain_rows(bad, name)
        if name == "hourly":
            frame = frame.withColumn("reporting_currency", frame["reporting_currency"].substr(1, 0).cast("string"))
            frame = frame.replace("", None, subset=["reporting_currency"])
        frame.coalesce(1).write.mode("overwrite").parquet(lake.metrics(name, INGEST_DATE))
    with pytest.raises(psycopg.errors.NotNullViolation):
        load(pipeline, warehouse_url, "bad")
    assert warehouse_rows(warehouse_url) == before
