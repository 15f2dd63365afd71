"""Helpers shared by the transform stages (Spark SQL functions only)."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from fluxo.contract import TRANSACTION, Contract

# When the same transaction arrives more than once, the copy from the first source in
# this tuple wins a tie on ingested_at (the API is the system of record).
SOURCE_PRIORITY = ("api", "db", "kafka", "s3")


def conform(df: DataFrame, contract: Contract, keep: tuple[str, ...] = ()) -> DataFrame:
    """Exactly the contract's columns, in order, cast to the contract's Spark types (then the
    columns `keep` as they are)."""
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in contract.spark_schema().fields], *keep)


def empty(spark, contract: Contract) -> DataFrame:
    return spark.createDataFrame([], contract.spark_schema())


def source_rank(source: Column) -> Column:
    known = F.array_position(F.array(*[F.lit(s) for s in SOURCE_PRIORITY]), source)
    return F.when(known > 0, known).otherwise(F.lit(len(SOURCE_PRIORITY) + 1))


def dedupe_order() -> list[Column]:
    """The one dedupe rule: earliest ingested_at, then source priority, then smallest batch_id.

    The remaining contract columns break any leftover tie so the surviving row is
    deterministic (reruns produce identical content).
    """
    rule = ["ingested_at", "source", "batch_id"]
    rest = [c for c in TRANSACTION.names if c not in (*TRANSACTION.key, *rule)]
    return [
        F.col("ingested_at").asc_nulls_last(),
        source_rank(F.col("source")).asc(),
        F.col("batch_id").asc_nulls_last(),
        *[F.col(c).asc_nulls_last() for c in rest],
    ]


def rank_copies(df: DataFrame, rank_col: str = "_copy_rank", partition: list[Column] | None = None) -> DataFrame:
    """Number the copies of each transaction_id by the dedupe rule (1 = the one kept)."""
    keys = partition if partition is not None else [F.col(k) for k in TRANSACTION.key]
    return df.withColumn(rank_col, F.row_number().over(Window.partitionBy(*keys).orderBy(*dedupe_order())))


def event_date(ts: Column | str = "event_ts") -> Column:
    """UTC calendar day of a timestamp (every fluxo session runs with timeZone=UTC)."""
    return F.to_date(ts)


def touched_event_dates(staged: DataFrame) -> list[str]:
    """The handful of event dates (YYYY-MM-DD) present in a staged batch."""
    rows = staged.select(event_date().alias("d")).where(F.col("d").isNotNull()).distinct().collect()
    return sorted(r["d"].isoformat() for r in rows)
