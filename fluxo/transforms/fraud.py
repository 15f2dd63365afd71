"""Fraud features and flags over curated transactions (Spark SQL functions only, no UDF).

`features(rows, dates, rules)` scores the curated rows of `dates` with the look-back
their features need, read by the caller from the curated table (`look_back_days`): `history_days`
before each scored day, and at least the day before (a burst that crosses midnight is seen whole).
Every feature of a row uses only rows at or before its own `event_ts` — no look-ahead. Times are
`event_ts` in microseconds. Three window passes, each a shuffle and a sort of only the columns
it needs: per customer over every row read, per card over the whole rows of the days the short
windows reach, and per card over the card-present rows read (narrow: most of them are history).
Each keeps the scored days' rows, and the scored rows take the other two passes' features by
transaction_id (hash joins: the narrow side is built, nothing is sorted). No self-join, so no
row meets more than its own card's or customer's neighbours.

Per customer (amount_vs_median): the customer's transactions in [t - `history_days`, t):
`customer_history_txns`, their exact `customer_median` of amount_reporting, and
`amount_to_median` = amount_reporting / customer_median when there are at least `min_history`.

Per card (partitioned by card_token, ordered by event time):
- `txns_10min`, `txns_1h`: the card's transactions in [t - 10 min, t] and [t - 1 h, t], itself
  included (every status: attempts count);
- `merchants_10min`, `merchants_1h`: distinct merchants in the same windows;
- `small_declines_before` (card_testing; approved rows only): the card's declined attempts with
  amount_reporting <= `small_amount` in [t - `window_minutes`, t);
- `duplicate_charges` (duplicate_charge; approved rows only): the card's other approved
  transactions with the same merchant, currency and amount in [t - `window_minutes`, t], ties in
  time included, so two charges in the same second flag each other;
- `card_present_history`, `usual_country`, `prior_country_txns` (unusual_country; card-present
  rows only): the card's card-present transactions in [t - `history_days`, t), the most frequent
  country among them (on a tie the first in alphabetical order) and, with at least `min_history`
  of them, how many were in this row's country;
- `prev_country`, `travel_minutes`, `min_travel_minutes`, `travel_time_ratio` (impossible_travel;
  card-present rows only): the card's previous card-present transaction strictly before t; when
  it was in another country, the minutes since then and their ratio to the pair's minimum travel
  time (`fluxo/reference/country_travel_minutes.csv`; a pair with minimum 0 — a land border — or
  missing from it is not judged).
And per row: `local_hour` in the merchant country's time zone (`country_timezones.csv`) and
`night_high_risk_amount` = amount_reporting when the MCC is one of `mccs` and the local hour is in
[night_start_hour, night_end_hour) (wrapping past midnight when start > end).

`alerts(features, rules, ...)` keeps the rows at least one rule flags (`Rule.fires`, the GX
semantics of the rule's expectation), with the rules that fired, the score
1 - Π(1 - weight) and the highest severity (fluxo.contract.FRAUD_ALERT).
"""

from __future__ import annotations

import functools
import math
from datetime import date, datetime, timedelta

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fluxo.contract import FRAUD_ALERT, TRANSACTION
from fluxo.fraud_rules import FraudRules
from fluxo.reference import timezone_table, travel_minutes_table
from fluxo.transforms._common import conform, event_date

MINUTE = 60_000_000  # microseconds
DAY = 24 * 60 * MINUTE
FEATURES = (
    "txns_10min", "txns_1h", "merchants_10min", "merchants_1h", "customer_history_txns", "customer_median",
    "amount_to_median", "card_present_history", "usual_country", "prior_country_txns", "prev_country",
    "travel_minutes", "min_travel_minutes", "travel_time_ratio", "small_declines_before", "duplicate_charges",
    "local_hour", "night_high_risk_amount",
)
# what a card-present row is read for (unusual_country, impossible_travel): its country and time
CARD_PRESENT_COLUMNS = ("transaction_id", "card_token", "country", "channel", "event_date", "_t")


def look_back_days(dates: list[str], rules: FraudRules) -> list[str]:
    """Every day to read for scoring `dates`: each scored day and the days before it that its
    history (`history_days`) and its short windows (at least one day) reach."""
    return _days_back(dates, max(_short_reach_days(rules), rules.history_days))


def _short_reach_days(rules: FraudRules) -> int:
    """Days before a scored day that its short windows (bursts, duplicates, travel) reach, at least one."""
    longest = max(rules.window_minutes, *travel_minutes_table().values())
    return max(1, math.ceil(longest / (24 * 60)))


def _days_back(dates: list[str], back: int) -> list[str]:
    every = set()
    for d in dates:
        day = date.fromisoformat(d)
        every |= {(day - timedelta(days=k)).isoformat() for k in range(back + 1)}
    return sorted(every)


# --- features ------------------------------------------------------------------------------------


def _micros() -> Column:
    return F.unix_micros(F.col("event_ts"))


def _median(values: Column) -> Column:
    """The exact median of an array of doubles without nulls (as collect_list makes it), interpolated
    as Spark's `median`. sort_array, not array_sort: array_sort's comparator is a lambda evaluated
    per comparison, and took half of the customer features' time at 1M rows."""
    s = F.sort_array(values)
    n = F.size(s)
    low, high = F.element_at(s, F.floor((n + 1) / 2).cast("int")), F.element_at(s, F.floor(n / 2 + 1).cast("int"))
    return F.when(n > 0, low + (high - low) * F.lit(0.5))


def _most_frequent(values: Column) -> Column:
    """The most frequent value of an array (on a tie the first alphabetically); null when empty."""
    counted = F.transform(F.array_distinct(values), lambda v: F.struct(
        (-F.size(F.filter(values, lambda x: x == v))).alias("rank"), v.alias("value")))
    return F.array_min(counted)["value"]


def _customer_features(rows: DataFrame, scored_days: Column, rules: FraudRules) -> DataFrame | None:
    """(transaction_id, customer_history_txns, customer_median) of the scored rows."""
    rule = rules.get("amount_vs_median")
    if not rule:
        return None
    customer = Window.partitionBy("customer_id").orderBy("_t").rangeBetween(-rule.params["history_days"] * DAY, -1)
    amounts = rows.select("transaction_id", "customer_id", "_t", "event_date",
                          F.col("amount_reporting").cast("double").alias("_a"))
    return (
        amounts.select("*", F.count(F.lit(1)).over(customer).alias("customer_history_txns"),
                       F.collect_list("_a").over(customer).alias("_amounts"))
        .where(scored_days)
        .select("transaction_id", "customer_history_txns", _median(F.col("_amounts")).alias("customer_median"))
    )


def _card_present_channels(rules: FraudRules) -> set[str]:
    return {c for name in ("unusual_country", "impossible_travel") if rules.get(name)
            for c in rules[name].params["card_present_channels"]}


def _travel_minutes_map() -> Column:
    """{"A B": minimum travel minutes} for each country pair A < B, as a literal map."""
    pairs = sorted((" ".join(sorted(pair)), minutes) for pair, minutes in travel_minutes_table().items())
    return F.create_map(*[F.lit(v) for kv in pairs for v in kv])


def _card_features(rows: DataFrame, rules: FraudRules) -> DataFrame:
    """`rows` with the card's short-window features (bursts, card testing, duplicate charges)."""
    card = Window.partitionBy("card_token").orderBy("_t")
    approved = F.col("status") == "approved"
    cols = {
        "txns_10min": F.count(F.lit(1)).over(card.rangeBetween(-10 * MINUTE, 0)),
        "txns_1h": F.count(F.lit(1)).over(card.rangeBetween(-60 * MINUTE, 0)),
        "merchants_10min": F.size(F.collect_set("merchant_id").over(card.rangeBetween(-10 * MINUTE, 0))),
        "merchants_1h": F.size(F.collect_set("merchant_id").over(card.rangeBetween(-60 * MINUTE, 0))),
    }
    testing = rules.get("card_testing")
    if testing:
        p = testing.params
        small_decline = (F.col("status") == "declined") & (F.col("amount_reporting") <= F.lit(p["small_amount"]))
        before = F.sum(F.when(small_decline, 1).otherwise(0)).over(card.rangeBetween(-p["window_minutes"] * MINUTE, -1))
        cols["small_declines_before"] = F.when(approved, F.coalesce(before, F.lit(0)))
    duplicate = rules.get("duplicate_charge")
    if duplicate:
        recent_charges = F.collect_list(F.struct("merchant_id", "currency", "amount", "status", "transaction_id")).over(
            card.rangeBetween(-duplicate.params["window_minutes"] * MINUTE, 0))
        same = F.filter(recent_charges, lambda x: (x["merchant_id"] == F.col("merchant_id"))
                        & (x["currency"] == F.col("currency")) & (x["amount"] == F.col("amount"))
                        & (x["status"] == "approved") & (x["transaction_id"] != F.col("transaction_id")))
        cols["duplicate_charges"] = F.when(approved, F.size(same))
    return rows.select("*", *[c.alias(n) for n, c in cols.items()])


def _card_present_features(rows: DataFrame, scored_days: Column, rules: FraudRules) -> DataFrame | None:
    """(transaction_id, the unusual_country and impossible_travel features) of the scored days'
    card-present rows, from the card-present rows among `rows`; None when neither rule is on."""
    country_rule, travel_rule = rules.get("unusual_country"), rules.get("impossible_travel")
    if not (country_rule or travel_rule):
        return None
    card = Window.partitionBy("card_token").orderBy("_t")
    present = rows.where(F.col("channel").isin(list(_card_present_channels(rules)))).select(*CARD_PRESENT_COLUMNS)
    cols = {}
    if country_rule:
        inside = F.col("channel").isin(list(country_rule.params["card_present_channels"]))
        earlier = card.rangeBetween(-country_rule.params["history_days"] * DAY, -1)
        cols["_cp_country"] = inside
        cols["_countries"] = F.collect_list(F.when(inside, F.col("country"))).over(earlier)
    if travel_rule:
        inside = F.col("channel").isin(list(travel_rule.params["card_present_channels"]))
        earlier = card.rangeBetween(Window.unboundedPreceding, -1)
        cols["_cp"] = inside
        cols["_prev_country"] = F.last(F.when(inside, F.col("country")), ignorenulls=True).over(earlier)
        cols["_prev_t"] = F.last(F.when(inside, F.col("_t")), ignorenulls=True).over(earlier)
    out = present.select("*", *[c.alias(n) for n, c in cols.items()]).where(scored_days)
    keep = ["transaction_id"]
    if country_rule:
        same_country = F.size(F.filter("_countries", lambda c: c == F.col("country")))
        history = F.when(F.col("_cp_country"), F.col("_countries"))
        out = (
            out.withColumn("_countries", history)
            .withColumn("card_present_history", F.when(F.col("_countries").isNotNull(), F.size("_countries")))
            .withColumn("usual_country", _most_frequent(F.col("_countries")))
            .withColumn("prior_country_txns",
                        F.when(F.col("card_present_history") >= country_rule.params["min_history"], same_country))
        )
        keep += ["card_present_history", "usual_country", "prior_country_txns"]
    if travel_rule:
        moved = F.col("_cp") & F.col("_prev_country").isNotNull() & (F.col("_prev_country") != F.col("country"))
        out = (
            out.withColumn("prev_country", F.when(moved, F.col("_prev_country")))
            .withColumn("travel_minutes", F.when(moved, (F.col("_t") - F.col("_prev_t")) / F.lit(float(MINUTE))))
            .withColumn("min_travel_minutes", F.try_element_at(
                _travel_minutes_map(), F.concat_ws(" ", F.least("prev_country", "country"), F.greatest("prev_country", "country"))))
            .withColumn("travel_time_ratio", F.when(F.col("min_travel_minutes") > 0,
                                                    F.col("travel_minutes") / F.col("min_travel_minutes")))
        )
        keep += ["prev_country", "travel_minutes", "min_travel_minutes", "travel_time_ratio"]
    return out.select(*keep)


def _local_hour() -> Column:
    """The hour of event_ts in the merchant country's time zone: one literal zone per country, so
    each zone is resolved once per query, not once per row (a zone column: 3x the time at 1M rows)."""
    hour = None
    for country, zone in sorted(timezone_table().items()):
        local = F.hour(F.from_utc_timestamp("event_ts", F.lit(zone)))
        hour = F.when(F.col("country") == country, local) if hour is None else hour.when(F.col("country") == country, local)
    return hour.cast("long")


def _local_time_features(df: DataFrame, rules: FraudRules) -> DataFrame:
    local = df.withColumn("local_hour", _local_hour())
    rule = rules.get("night_high_risk_mcc")
    if rule:
        p = rule.params
        start, end = p["night_start_hour"], p["night_end_hour"]
        h = F.col("local_hour")
        night = (h >= start) & (h < end) if start <= end else (h >= start) | (h < end)
        risky = F.col("mcc").isin(list(p["mccs"])) & night
        local = local.withColumn("night_high_risk_amount", F.when(risky, F.col("amount_reporting")))
    return local


def features(rows: DataFrame, dates: list[str], rules: FraudRules) -> DataFrame:
    """The curated rows of `dates` with every feature (FEATURES), from `rows` = the curated rows of
    `look_back_days(dates, rules)` (more days are harmless; fewer miss history), with or without
    the table's event_date column."""
    # the table's event_date when the rows carry it (read_days(with_partition=True)): the filters
    # below then read only the partitions they keep; by contract it is the UTC day of event_ts
    if "event_date" in rows.columns:
        rows = conform(rows, TRANSACTION, ("event_date",))
    else:
        rows = conform(rows, TRANSACTION).withColumn("event_date", event_date())
    rows = rows.withColumn("_t", _micros())
    scored_days = F.col("event_date").isin([date.fromisoformat(d) for d in dates])
    # whole rows only where a scored row's short windows reach: most rows read are history, and
    # the history passes shuffle just the columns they read
    near = F.col("event_date").isin([date.fromisoformat(d) for d in _days_back(dates, _short_reach_days(rules))])
    scored = _card_features(rows.where(near), rules).where(scored_days)
    present = _card_present_features(rows, scored_days, rules)
    if present is not None:
        scored = scored.join(present.hint("shuffle_hash"), "transaction_id", "left")
    customer = _customer_features(rows, scored_days, rules)
    if customer is not None:
        rule = rules["amount_vs_median"]
        enough = (F.col("customer_history_txns") >= rule.params["min_history"]) & (F.col("customer_median") > 0)
        scored = scored.join(customer.hint("shuffle_hash"), "transaction_id", "left").withColumn(
            "amount_to_median", F.when(enough, F.col("amount_reporting").cast("double") / F.col("customer_median")))
    scored = _local_time_features(scored, rules)

    types = {f.name: f.dataType for f in FRAUD_ALERT.spark_schema().fields}
    present = set(scored.columns)
    return scored.select(
        *TRANSACTION.names, "event_date",
        *[(F.col(n) if n in present else F.lit(None)).cast(types[n]).alias(n) for n in FEATURES],
    )


# --- flags ---------------------------------------------------------------------------------------


def rule_counts(features_df: DataFrame, rules: FraudRules) -> dict[str, int]:
    """How many rows each rule flags, in one aggregation."""
    row = features_df.agg(*[F.count(F.when(r.fires(), 1)).alias(r.name) for r in rules.rules]).collect()[0]
    return {r.name: int(row[r.name]) for r in rules.rules}


def checkpoint_rule_counts(records: list[dict], rows: int) -> dict[str, int | None]:
    """The rows each rule's expectation found unexpected in the fraud checkpoint (its report's records).

    GX gives no count for a batch without rows: a day with nothing to score flags nothing."""
    return {r["rule"]: 0 if rows == 0 and r["unexpected_count"] is None else r["unexpected_count"] for r in records}


def alerts(features_df: DataFrame, rules: FraudRules, run_id: str, detected_at: datetime) -> DataFrame:
    """The rows at least one rule flags, typed as FRAUD_ALERT."""
    fired = F.array_sort(F.filter(F.array(*[F.when(r.fires(), F.lit(r.name)) for r in rules.rules]),
                                  lambda name: name.isNotNull()))
    keep = functools.reduce(lambda a, b: a * b, [F.when(r.fires(), F.lit(1.0 - r.weight)).otherwise(F.lit(1.0))
                                                 for r in rules.rules])
    critical = functools.reduce(lambda a, b: a | b, [r.fires() for r in rules.rules if r.severity == "critical"],
                                F.lit(False))
    flagged = (
        features_df.withColumn("_fired", fired)
        .where(F.size("_fired") > 0)
        .withColumn("rules", F.array_join("_fired", ","))
        .withColumn("rule_count", F.size("_fired").cast(T.LongType()))
        .withColumn("score", F.round(F.lit(1.0) - keep, 6))
        .withColumn("severity", F.when(critical, F.lit("critical")).otherwise(F.lit("warning")))
        .withColumn("detected_at", F.lit(detected_at).cast("timestamp"))
        .withColumn("run_id", F.lit(run_id))
    )
    return conform(flagged, FRAUD_ALERT)


def alert_flags(alerts_df: DataFrame) -> DataFrame:
    """(transaction_id, _fraud = 1) per alerted transaction, for aggregate's flag counts."""
    return alerts_df.select("transaction_id").distinct().withColumn("_fraud", F.lit(1))
