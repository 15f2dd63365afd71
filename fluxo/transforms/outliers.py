"""Outliers: robust statistics over curated transactions, one row per (transaction, method) flagged.

Three detectors, each recording its score, threshold, baseline and scale (`fluxo.contract.OUTLIER`):

- `mad_zscore` — modified z-score per (mcc, currency): z = 0.6745 · (ln a − median ln a) / MAD,
  flagged when |z| > 3.5 (Iglewicz & Hoaglin). When MAD is 0 (many identical amounts,
  e.g. ATM notes) the mean absolute deviation takes its place: z = (ln a − median) / (1.253314 · MeanAD).
- `iqr_fence` — Tukey's far-out fences per (mcc, currency) on ln a: flagged outside
  [Q1 − k·IQR, Q3 + k·IQR] with k = 3; score = distance beyond the nearer quartile in IQRs
  (positive above Q3, negative below Q1), threshold = k.
- `customer_history` — the customer's own history: score = amount_reporting / the customer's
  median amount_reporting over the history window; flagged when ≥ 50 and the customer has at
  least `min_customer_history` transactions in the window. Upward only: spending far above
  one's own habit is the signal; small purchases are normal for everyone.

Why logarithms: card amounts are roughly log-normal. On raw amounts a MAD or IQR rule flags a
few percent of ordinary purchases in wide categories; on ln(amount) the same rules flag a
handful per million while amounts ≥ 50× the category median still stand out (z ≥ ln 50 / σ).
`baseline` is always reported in money (the median amount; the median commutes with ln), `scale`
is the MAD/IQR of ln(amount) for the group methods and the history size for customer_history.

Group statistics need `min_group_size` rows; groups below it flag nothing (a median of five
amounts is not a baseline). Statistics come from `history` (the window the caller read, which
includes the candidate days), computed with `percentile_approx` (Spark SQL, no UDF), in two
aggregations: quartiles, then the median absolute deviation around the median.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fluxo.contract import OUTLIER, OUTLIER_SUMMARY
from fluxo.transforms._common import conform, event_date

GROUP = ["mcc", "currency"]
MAD_CONSISTENCY = 0.6745  # Φ⁻¹(0.75): makes MAD comparable to a standard deviation
MEAN_AD_CONSISTENCY = 1.253314  # √(π/2): the same for the mean absolute deviation


@dataclass(frozen=True)
class OutlierParams:
    mad_threshold: float = 3.5
    iqr_k: float = 3.0
    customer_ratio: float = 50.0
    min_group_size: int = 30
    min_customer_history: int = 10
    # percentile_approx accuracy: relative rank error 1/accuracy. Customer medians are many
    # small groups where 0.1% is plenty; each group's sketch costs memory in proportion.
    accuracy: int = 10_000
    customer_accuracy: int = 1_000


def _ln_amount() -> Column:
    return F.ln(F.col("amount").cast("double"))


def group_baselines(history: DataFrame, params: OutlierParams = OutlierParams()) -> DataFrame:
    """Per (mcc, currency): rows, median/Q1/Q3 of ln(amount), MAD and mean absolute deviation."""
    ln_amount = _ln_amount().alias("ln_amount")
    quartiles = (
        history.select(*GROUP, ln_amount)
        .groupBy(*GROUP)
        .agg(
            F.count(F.lit(1)).alias("group_rows"),
            F.percentile_approx("ln_amount", [0.25, 0.5, 0.75], params.accuracy).alias("q"),
        )
        .where(F.col("group_rows") >= params.min_group_size)
        .select(
            *GROUP, "group_rows",
            F.col("q")[0].alias("q1"), F.col("q")[1].alias("med"), F.col("q")[2].alias("q3"),
        )
    )
    deviation = F.abs(F.col("ln_amount") - F.col("med"))
    spread = (
        history.select(*GROUP, ln_amount)
        .join(F.broadcast(quartiles.select(*GROUP, "med")), GROUP)
        .groupBy(*GROUP)
        .agg(
            F.percentile_approx(deviation, F.lit(0.5), params.accuracy).alias("mad"),
            F.avg(deviation).alias("mean_ad"),
        )
    )
    return quartiles.join(spread, GROUP)


def customer_baselines(history: DataFrame, params: OutlierParams = OutlierParams()) -> DataFrame:
    """Per customer with enough history: transactions in the window and median amount_reporting."""
    return (
        history.groupBy("customer_id")
        .agg(
            F.count(F.lit(1)).alias("history_rows"),
            F.percentile_approx(F.col("amount_reporting").cast("double"), F.lit(0.5), params.customer_accuracy)
            .alias("customer_median"),
        )
        .where((F.col("history_rows") >= params.min_customer_history) & (F.col("customer_median") > 0))
    )


def _finding(method: str, flagged: Column, score: Column, threshold: float, baseline: Column, scale: Column) -> Column:
    """A struct for one method, or null when the method does not flag the row."""
    found = F.struct(
        F.lit(method).alias("method"),
        F.round(score, 6).alias("score"),
        F.lit(float(threshold)).alias("threshold"),
        F.round(baseline, 4).alias("baseline"),
        F.round(scale, 6).alias("scale"),
    )
    return F.when(F.coalesce(flagged, F.lit(False)), found)


def detect(
    candidates: DataFrame,
    history: DataFrame,
    run_id: str,
    detected_at: datetime,
    params: OutlierParams = OutlierParams(),
) -> DataFrame:
    """Outliers among `candidates` (curated rows) against baselines from `history` (curated rows).

    One pass over the candidates: each row is joined to its group and customer baselines,
    scored by every method, and exploded into one output row per method that flags it.
    """
    groups = group_baselines(history, params)
    customers = customer_baselines(history, params)
    ln_amount = _ln_amount()
    # the customers' side is built into a hash table: a sort-merge join sorted every candidate row
    scored = candidates.join(F.broadcast(groups), GROUP, "left").join(
        customers.hint("shuffle_hash"), "customer_id", "left")

    mad_scale = F.when(F.col("mad") > 0, F.col("mad") / MAD_CONSISTENCY).otherwise(
        F.col("mean_ad") * MEAN_AD_CONSISTENCY
    )
    z = F.when(mad_scale > 0, (ln_amount - F.col("med")) / mad_scale)
    iqr = F.col("q3") - F.col("q1")
    beyond = F.when(ln_amount > F.col("q3"), (ln_amount - F.col("q3")) / iqr).when(
        ln_amount < F.col("q1"), (ln_amount - F.col("q1")) / iqr
    ).otherwise(F.lit(0.0))
    iqr_score = F.when(iqr > 0, beyond)
    ratio = F.col("amount_reporting").cast("double") / F.col("customer_median")
    median_amount = F.exp(F.col("med"))

    findings = F.array(
        _finding("mad_zscore", F.abs(z) > params.mad_threshold, z, params.mad_threshold,
                 median_amount, F.when(F.col("mad") > 0, F.col("mad")).otherwise(F.col("mean_ad"))),
        _finding("iqr_fence", F.abs(iqr_score) > params.iqr_k, iqr_score, params.iqr_k, median_amount, iqr),
        _finding("customer_history", ratio >= params.customer_ratio, ratio, params.customer_ratio,
                 F.col("customer_median"), F.col("history_rows").cast("double")),
    )
    flagged = (
        scored.select("*", F.explode(F.filter(findings, lambda f: f.isNotNull())).alias("f"))
        .select(
            "*",
            event_date().alias("event_date"),
            F.col("f.method").alias("method"),
            F.col("f.score").alias("score"),
            F.col("f.threshold").alias("threshold"),
            F.col("f.baseline").alias("baseline"),
            F.col("f.scale").alias("scale"),
            F.lit(detected_at).cast("timestamp").alias("detected_at"),
            F.lit(run_id).alias("run_id"),
        )
    )
    return conform(flagged, OUTLIER)


def outlier_summary(outliers: DataFrame) -> DataFrame:
    """Counts per (event_date, method, mcc) with the largest |score| and the flagged amount."""
    summary = outliers.groupBy("event_date", "method", "mcc").agg(
        F.count(F.lit(1)).alias("outlier_count"),
        F.max(F.abs("score")).alias("max_score"),
        F.sum("amount_reporting").alias("amount_reporting_total"),
    )
    return conform(summary, OUTLIER_SUMMARY).orderBy("event_date", "method", "mcc")
