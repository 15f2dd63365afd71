"""daily_metrics against pandas, and every finer grain against DuckDB, over the same crafted rows."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd

from fluxo.contract import DAILY_METRICS, PERCENTILES, STATUSES, TRANSACTION
from fluxo.transforms.aggregate import (
    FRAUD_FLAG,
    GROUPED_GRAINS,
    METRIC_INPUTS,
    daily_metrics,
    grain_counts,
    grain_metrics,
    grain_rows,
    with_fraud_flags,
)


def curated_rows(n=300, seed=7):
    rng = random.Random(seed)
    start = datetime(2026, 11, 25, 0, 0, 0)
    rows = []
    for i in range(n):
        amount = Decimal(rng.randint(1, 500000)) / 100
        rows.append({
            "transaction_id": f"t{i}",
            "source": "s3",
            "event_ts": start + timedelta(seconds=rng.randint(0, 3 * 86400 - 1)),
            "customer_id": f"C{rng.randint(1, 40)}",
            "card_token": "tok_a",
            "card_last4": None,
            "merchant_id": f"M{rng.randint(1, 15)}",
            "mcc": "5411",
            "amount": amount,
            "currency": "BRL",
            "amount_reporting": amount,
            "country": "BR",
            "channel": "pos",
            "status": rng.choice(STATUSES),
            "batch_id": "b1",
            "ingested_at": start + timedelta(days=3),
        })
    # exact half-cent averages must round up: 0.01 + 0.02 -> avg 0.015 -> 0.02
    for i, cents in enumerate(("0.01", "0.02")):
        rows.append({**rows[0], "transaction_id": f"half{i}", "event_ts": datetime(2026, 11, 30, 12, 0),
                     "amount": Decimal(cents), "amount_reporting": Decimal(cents), "status": "approved"})
    return rows


def expected(rows, currency):
    df = pd.DataFrame(rows)
    df["event_date"] = df["event_ts"].dt.date
    out = {}
    for day, g in df.groupby("event_date"):
        total = sum(g["amount_reporting"], Decimal("0"))
        out[day] = {
            "transaction_count": len(g),
            "amount_total": total,
            "amount_avg": (total / len(g)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP),
            "amount_min": min(g["amount_reporting"]),
            "amount_max": max(g["amount_reporting"]),
            "approved_count": int((g["status"] == "approved").sum()),
            "declined_count": int((g["status"] == "declined").sum()),
            "reversed_count": int((g["status"] == "reversed").sum()),
            "approval_rate": (g["status"] == "approved").sum() / len(g),
            "distinct_customers": g["customer_id"].nunique(),
            "distinct_merchants": g["merchant_id"].nunique(),
            "reporting_currency": currency,
        }
    return out


def test_daily_metrics_match_pandas(spark):
    rows = curated_rows()
    df = spark.createDataFrame([tuple(r[c] for c in TRANSACTION.names) for r in rows], TRANSACTION.spark_schema())
    metrics = daily_metrics(df, "BRL")
    assert [(f.name, f.dataType) for f in metrics.schema.fields] == [
        (f.name, f.dataType) for f in DAILY_METRICS.spark_schema().fields
    ]
    got = {r["event_date"]: r.asDict() for r in metrics.collect()}
    want = expected(rows, "BRL")
    assert sorted(got) == sorted(want) == [date(2026, 11, d) for d in (25, 26, 27, 30)]
    for day, values in want.items():
        row = got[day]
        for key, value in values.items():
            if key == "approval_rate":
                assert abs(row[key] - value) < 1e-12, (day, key)
            else:
                assert row[key] == value, (day, key, row[key], value)
    assert got[date(2026, 11, 30)]["amount_avg"] == Decimal("0.02")


# --- finer grains: one grouping-sets aggregation vs DuckDB -----------------------------

def varied_rows(n=600, seed=11):
    """Curated rows spread over merchants, MCCs, countries, channels, hours and two days."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 25, 0, 0, 0)
    rows = []
    for i in range(n):
        amount = Decimal(rng.randint(1, 900000)) / 100
        merchant = rng.randint(1, 12)
        rows.append({
            "transaction_id": f"v{i}", "source": rng.choice(("s3", "api")),
            "event_ts": start + timedelta(seconds=rng.randint(0, 2 * 86400 - 1)),
            "customer_id": f"C{rng.randint(1, 60)}", "card_token": "tok_v", "card_last4": None,
            "merchant_id": f"M{merchant}", "mcc": ("5411", "5812", "5999")[merchant % 3],
            "amount": amount, "currency": "BRL", "amount_reporting": amount,
            "country": rng.choice(("BR", "AR", "US")), "channel": rng.choice(("pos", "ecommerce", "mobile")),
            "status": rng.choice(STATUSES), "batch_id": "b1", "ingested_at": start + timedelta(days=2),
        })
    # a merchant with a single row on a day of its own: every statistic is that one amount
    rows.append({**rows[0], "transaction_id": "lonely", "merchant_id": "M99", "mcc": "7011",
                 "event_ts": datetime(2026, 11, 27, 23, 59, 59), "amount_reporting": Decimal("42.00"),
                 "status": "declined"})
    return rows


def percentile_of(sorted_amounts: list, p: float):
    """percentile_approx's definition, exact below PERCENTILE_ACCURACY rows: the smallest value
    with at least p * n values at or below it."""
    import math

    return sorted_amounts[max(math.ceil(p * len(sorted_amounts)), 1) - 1]


def duckdb_grains(rows, currency, alerted=frozenset()):
    import duckdb

    frame = pd.DataFrame(rows)
    frame["fraud"] = frame["transaction_id"].isin(alerted)
    frame["amount_reporting"] = frame["amount_reporting"].astype(str)
    con = duckdb.connect()
    con.register("curated", frame)
    out = {}
    for name, contract in GROUPED_GRAINS.items():
        keys = ", ".join(contract.key)
        query = f"""
            WITH t AS (SELECT CAST(event_ts AS DATE) AS event_date, date_trunc('hour', event_ts) AS event_hour,
                              merchant_id, mcc, country, channel, customer_id, status, fraud,
                              CAST(amount_reporting AS DECIMAL(18,2)) AS amount
                       FROM curated)
            SELECT {keys}, count(*) AS transaction_count, sum(amount) AS amount_total,
                   min(amount) AS amount_min, max(amount) AS amount_max,
                   list(amount ORDER BY amount) AS amounts,
                   count(*) FILTER (WHERE status = 'approved') AS approved_count,
                   count(*) FILTER (WHERE status = 'declined') AS declined_count,
                   count(*) FILTER (WHERE status = 'reversed') AS reversed_count,
                   count(*) FILTER (WHERE status = 'approved') / count(*) AS approval_rate,
                   count(DISTINCT customer_id) AS distinct_customers,
                   count(*) FILTER (WHERE fraud) AS fraud_alert_count,
                   count(*) FILTER (WHERE fraud) / count(*) AS fraud_alert_rate
            FROM t GROUP BY {keys}"""
        grain = {}
        result = con.execute(query)
        names = [d[0] for d in result.description]
        for record in (dict(zip(names, values)) for values in result.fetchall()):
            amounts = record.pop("amounts")
            record["amount_avg"] = (record["amount_total"] / record["transaction_count"]).quantize(
                Decimal("0.01"), rounding=ROUND_HALF_UP)
            for column, p in PERCENTILES.items():
                record[column] = percentile_of(list(amounts), p)
            record["reporting_currency"] = currency
            grain[tuple(record[k] for k in contract.key)] = record
        out[name] = grain
    return out


def test_grain_metrics_match_duckdb(spark):
    rows = varied_rows()
    df = spark.createDataFrame([tuple(r[c] for c in TRANSACTION.names) for r in rows], TRANSACTION.spark_schema())
    # the fraud stage alerted on every third transaction (twice on one of them: one flag)
    alerted = {r["transaction_id"] for r in rows[::3]}
    alerts = spark.createDataFrame([(t,) for t in [*sorted(alerted), rows[0]["transaction_id"]]], "transaction_id string")
    flagged = with_fraud_flags(df, alerts)
    # the stage caches this frame: only what the metrics read, and the daily metrics read it too
    assert flagged.columns == [*METRIC_INPUTS, FRAUD_FLAG]
    fraud_columns = {"fraud_alert_count", "fraud_alert_rate"}
    daily = [{k: v for k, v in r.asDict().items() if k not in fraud_columns} for r in daily_metrics(flagged, "BRL").collect()]
    assert daily == [{k: v for k, v in r.asDict().items() if k not in fraud_columns}
                     for r in daily_metrics(df, "BRL").collect()]
    metrics = grain_metrics(flagged, "BRL").cache()
    want = duckdb_grains(rows, "BRL", alerted)
    assert grain_counts(metrics) == {name: len(want[name]) for name in GROUPED_GRAINS}
    for name, contract in GROUPED_GRAINS.items():
        frame = grain_rows(metrics, name)
        assert [(f.name, f.dataType) for f in frame.schema.fields] == [
            (f.name, f.dataType) for f in contract.spark_schema().fields
        ], name
        got = {tuple(r[k] for k in contract.key): r.asDict() for r in frame.collect()}
        expected = want[name]
        assert sorted(got) == sorted(expected), name
        for key, values in expected.items():
            row = got[key]
            for column in contract.names:
                if column in contract.key:
                    continue
                value = values[column]
                if column in ("approval_rate", "fraud_alert_rate"):
                    assert abs(row[column] - float(value)) < 1e-12, (name, key, column)
                else:
                    assert row[column] == value, (name, key, column, row[column], value)
    lonely = grain_rows(metrics, "merchant_daily").where("merchant_id = 'M99'").collect()
    assert len(lonely) == 1 and lonely[0]["amount_p99"] == lonely[0]["amount_p50"] == Decimal("42.00")
    assert lonely[0]["approval_rate"] == 0.0 and lonely[0]["distinct_customers"] == 1
    hours = grain_rows(metrics, "hourly").collect()
    assert sum(r["transaction_count"] for r in hours) == len(rows)
    metrics.unpersist()
