"""daily_metrics against a pandas computation of the same rows."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd

from fluxo.contract import DAILY_METRICS, STATUSES, TRANSACTION
from fluxo.transforms.aggregate import daily_metrics


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
