"""Aggregate: daily metrics of curated transactions (`fluxo.contract.DAILY_METRICS`).

Amounts are over `amount_reporting` (the reporting currency chosen at standardize);
`amount_avg` is rounded half up to cents; `approval_rate` = approved / all.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fluxo.contract import DAILY_METRICS
from fluxo.transforms._common import conform, event_date


def daily_metrics(curated: DataFrame, reporting_currency: str) -> DataFrame:
    """One row per event_date (UTC) of the given curated rows, typed exactly as DAILY_METRICS."""
    amount = F.col("amount_reporting")

    def count_status(status: str):
        return F.count(F.when(F.col("status") == status, 1))

    metrics = curated.groupBy(event_date().alias("event_date")).agg(
        F.count(F.lit(1)).alias("transaction_count"),
        F.sum(amount).alias("amount_total"),
        F.round(F.avg(amount), 2).alias("amount_avg"),
        F.min(amount).alias("amount_min"),
        F.max(amount).alias("amount_max"),
        count_status("approved").alias("approved_count"),
        count_status("declined").alias("declined_count"),
        count_status("reversed").alias("reversed_count"),
        F.count_distinct("customer_id").alias("distinct_customers"),
        F.count_distinct("merchant_id").alias("distinct_merchants"),
    )
    metrics = metrics.withColumn(
        "approval_rate", F.col("approved_count").cast("double") / F.col("transaction_count").cast("double")
    ).withColumn("reporting_currency", F.lit(reporting_currency))
    return conform(metrics, DAILY_METRICS).orderBy("event_date")
