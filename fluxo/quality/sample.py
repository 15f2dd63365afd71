"""Synthetic, contract-valid transactions for the quality tests and the benchmark (no files, any size)."""

from __future__ import annotations

from fluxo.contract import CHANNELS, CURRENCIES, SOURCES, STATUSES, TRANSACTION


def _pick(values: tuple[str, ...], seed: str) -> str:
    listed = ", ".join(f"'{v}'" for v in values)
    return f"element_at(array({listed}), cast(pmod({seed}, {len(values)}) as int) + 1)"


# One Spark SQL expression per contract column, over `id` from spark.range.
_VALUES = {
    "transaction_id": "concat('TXN-', lpad(cast(id as string), 10, '0'))",
    "source": _pick(SOURCES, "id"),
    "event_ts": "timestamp_seconds(1795000000 + id % 86400)",
    "customer_id": "concat('C', lpad(cast(id % 50000 as string), 6, '0'))",
    "card_token": "concat('tok_', md5(cast(id % 200000 as string)))",
    "card_last4": "lpad(cast(id % 10000 as string), 4, '0')",
    "merchant_id": "concat('M', lpad(cast(id % 3000 as string), 5, '0'))",
    "mcc": _pick(("5411", "5812", "5999", "4111", "6011"), "id"),
    "amount": "1 + (id % 100000) / 100",
    "currency": _pick(CURRENCIES, "id"),
    "amount_reporting": "1 + (id % 100000) / 50",
    "country": _pick(("BR", "US", "AR", "CL", "MX", "GB", "DE"), "id"),
    "channel": _pick(CHANNELS, "id"),
    "status": _pick(STATUSES, "id"),
    "batch_id": "'batch-synthetic'",
    "ingested_at": "timestamp_seconds(1795000000 + 86400)",
}


def synthetic_transactions(spark, rows: int):
    """`rows` valid transactions with the contract's column names, order and types."""
    missing = set(TRANSACTION.names) ^ set(_VALUES)
    if missing:
        raise RuntimeError(f"synthetic transactions out of step with the contract: {sorted(missing)}")
    schema = TRANSACTION.spark_schema()
    return spark.range(rows).selectExpr(
        *(f"cast({_VALUES[f.name]} as {f.dataType.simpleString()}) as {f.name}" for f in schema)
    )
