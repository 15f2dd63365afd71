"""The fraud rules computed a second way, in DuckDB SQL over curated Parquet/Arrow: the independent
reference the end-to-end test compares the warehouse's alerts with, and the single-node baseline
of bench/fraud_bench.py. Same suite (thresholds read from expectations/fraud_rules.json), same
reference data, written from the rule definitions in fluxo.transforms.fraud's docstring — not
from its code.

    flagged = reference_alerts(con, dates, rules)   # {transaction_id: {rule, ...}}

`con` has a table or view `source` with the curated columns of every day
`fluxo.transforms.fraud.look_back_days(dates, rules)` names.
"""

from __future__ import annotations

from fluxo.fraud_rules import FraudRules, Rule
from fluxo.reference import timezone_table, travel_minutes_table

MINUTE_US = 60_000_000
DAY_US = 24 * 60 * MINUTE_US


def _in(values) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _fires(rule: Rule) -> str:
    """SQL for the rule's GX semantics: feature not null and outside [min, max]."""
    col, inside = rule.column, []
    if rule.min_value is not None:
        inside.append(f"{col} {'>' if rule.strict_min else '>='} {rule.min_value}")
    if rule.max_value is not None:
        inside.append(f"{col} {'<' if rule.strict_max else '<='} {rule.max_value}")
    return f"({col} IS NOT NULL AND NOT ({' AND '.join(inside)}))"


def _reference_tables(con) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE ref_travel (a VARCHAR, b VARCHAR, minutes DOUBLE)")
    con.executemany("INSERT INTO ref_travel VALUES (?, ?, ?)",
                    [(min(p), max(p), m) for p, m in travel_minutes_table().items()])
    con.execute("CREATE OR REPLACE TEMP TABLE ref_tz (country VARCHAR, tz VARCHAR)")
    con.executemany("INSERT INTO ref_tz VALUES (?, ?)", list(timezone_table().items()))


def features_sql(dates: list[str], rules: FraudRules) -> str:
    """One query: every feature the enabled rules need, for the rows of `dates`."""
    r = {rule.name: rule for rule in rules.rules}
    scored = f"CAST(event_ts AS DATE) IN ({', '.join(f'DATE {d!r}' for d in dates)})"
    ct = r.get("card_testing")
    dup = r.get("duplicate_charge")
    amv = r.get("amount_vs_median")
    cty = r.get("unusual_country")
    trv = r.get("impossible_travel")
    night = r.get("night_high_risk_mcc")
    present_tr = _in(trv.params["card_present_channels"]) if trv else "('')"
    parts = [f"""
    WITH base AS (
        SELECT *, epoch_us(event_ts) AS t, CAST(amount_reporting AS DOUBLE) AS amt FROM source
    ), win AS (
        SELECT *,
            count(*) OVER (PARTITION BY card_token ORDER BY t RANGE BETWEEN {10 * MINUTE_US} PRECEDING AND CURRENT ROW) AS txns_10min,
            count(DISTINCT merchant_id) OVER (PARTITION BY card_token ORDER BY t
                RANGE BETWEEN {60 * MINUTE_US} PRECEDING AND CURRENT ROW) AS merchants_1h,
            last_value(CASE WHEN channel IN {present_tr} THEN country END IGNORE NULLS) OVER (PARTITION BY card_token
                ORDER BY t RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS p_country,
            last_value(CASE WHEN channel IN {present_tr} THEN t END IGNORE NULLS) OVER (PARTITION BY card_token
                ORDER BY t RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS p_t
        FROM base
    ), s AS (SELECT * FROM win WHERE {scored})
    SELECT s.transaction_id, s.txns_10min, s.merchants_1h"""]
    joins = []
    if ct:
        w, small = ct.params["window_minutes"] * MINUTE_US, ct.params["small_amount"]
        parts.append(f""", CASE WHEN s.status = 'approved' THEN (SELECT count(*) FROM base h
            WHERE h.card_token = s.card_token AND h.status = 'declined' AND h.amt <= {small}
              AND h.t >= s.t - {w} AND h.t < s.t) END AS small_declines_before""")
    if dup:
        w = dup.params["window_minutes"] * MINUTE_US
        parts.append(f""", CASE WHEN s.status = 'approved' THEN (SELECT count(*) FROM base h
            WHERE h.card_token = s.card_token AND h.merchant_id = s.merchant_id AND h.currency = s.currency
              AND h.amount = s.amount AND h.status = 'approved' AND h.transaction_id <> s.transaction_id
              AND h.t >= s.t - {w} AND h.t <= s.t) END AS duplicate_charges""")
    if amv:
        span, least = amv.params["history_days"] * DAY_US, amv.params["min_history"]
        parts.append(f""", CASE WHEN cm.n >= {least} AND cm.med > 0 THEN s.amt / cm.med END AS amount_to_median""")
        joins.append(f"""LEFT JOIN (SELECT s2.transaction_id, count(*) AS n, quantile_cont(h.amt, 0.5) AS med
            FROM s s2 JOIN base h ON h.customer_id = s2.customer_id AND h.t >= s2.t - {span} AND h.t < s2.t
            GROUP BY 1) cm USING (transaction_id)""")
    if cty:
        span, least, present = cty.params["history_days"] * DAY_US, cty.params["min_history"], \
            _in(cty.params["card_present_channels"])
        parts.append(f""", CASE WHEN s.channel IN {present} AND coalesce(cc.n, 0) >= {least}
            THEN coalesce(cc.same, 0) END AS prior_country_txns""")
        joins.append(f"""LEFT JOIN (SELECT s2.transaction_id, count(*) AS n,
                count(*) FILTER (WHERE h.country = s2.country) AS same
            FROM s s2 JOIN base h ON h.card_token = s2.card_token AND h.t >= s2.t - {span} AND h.t < s2.t
            WHERE s2.channel IN {present} AND h.channel IN {present}
            GROUP BY 1) cc USING (transaction_id)""")
    if trv:
        parts.append(f""", CASE WHEN s.channel IN {present_tr} AND s.p_country IS NOT NULL AND s.p_country <> s.country
            AND tr.minutes > 0 THEN (s.t - s.p_t) / {float(MINUTE_US)} / tr.minutes END AS travel_time_ratio""")
        joins.append("""LEFT JOIN ref_travel tr ON tr.a = least(s.p_country, s.country)
            AND tr.b = greatest(s.p_country, s.country)""")
    if night:
        p = night.params
        hour = "hour(timezone(tz.tz, s.event_ts))"
        start, end = p["night_start_hour"], p["night_end_hour"]
        is_night = (f"({hour} >= {start} AND {hour} < {end})" if start <= end
                    else f"({hour} >= {start} OR {hour} < {end})")
        parts.append(f""", CASE WHEN s.mcc IN {_in(p['mccs'])} AND tz.tz IS NOT NULL AND {is_night}
            THEN s.amt END AS night_high_risk_amount""")
        joins.append("LEFT JOIN ref_tz tz ON tz.country = s.country")
    return "".join(parts) + "\nFROM s\n" + "\n".join(joins)


def reference_alerts(con, dates: list[str], rules: FraudRules) -> dict[str, set[str]]:
    """{transaction_id: rules that fired} for the rows of `dates` in the view `source`."""
    con.execute("SET TimeZone = 'UTC'")
    _reference_tables(con)
    fired = ", ".join(f"CASE WHEN {_fires(rule)} THEN '{rule.name}' END" for rule in rules.rules)
    rows = con.execute(f"""
        SELECT transaction_id, list_filter([{fired}], lambda x: x IS NOT NULL) AS rules
        FROM ({features_sql(dates, rules)}) WHERE len(list_filter([{fired}], lambda x: x IS NOT NULL)) > 0
    """).fetchall()
    return {tid: set(names) for tid, names in rows}


# The generator's planted amount outliers (60-300x their category's median) are, by construction,
# amounts far above a customer's usual ones, and large amounts wherever they fall (a betting
# merchant at night): flagging them is right for these rules, not a false alarm.
ALSO_RIGHT_ON_OUTLIERS = frozenset({"amount_vs_median", "night_high_risk_mcc"})


def truth_labels(truth, days) -> tuple[dict[str, str], set[str]]:
    """({transaction_id: the rule it was planted for}, {planted amount outliers}) of the generator's
    truth table (transaction_id, event_ts, fraud_pattern, is_outlier) on the event dates `days`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    on_days = pc.is_in(pc.cast(pc.cast(truth.column("event_ts"), pa.timestamp("us")), pa.date32()),
                       value_set=pa.array(list(days), pa.date32()))
    rows = truth.filter(on_days).select(["transaction_id", "fraud_pattern", "is_outlier"]).to_pylist()
    return ({r["transaction_id"]: r["fraud_pattern"] for r in rows if r["fraud_pattern"]},
            {r["transaction_id"] for r in rows if r["is_outlier"]})


def precision_recall(alerts: dict[str, set[str]], labels: dict[str, str], rules: list[str],
                     outliers: set[str] = frozenset()) -> dict[str, dict]:
    """Per rule and overall, the alerts scored against the generator's ground truth.

    `alerts`: {transaction_id: rules that fired}; `labels`: {transaction_id: the rule a planted
    positive must fire} over the same transactions; `outliers`: the planted amount outliers.
    Per rule: hits = alerts naming the rule on rows planted for it (for ALSO_RIGHT_ON_OUTLIERS, on
    planted outliers too); precision = hits / alerts naming it, recall = planted rows it flagged /
    rows planted for it. Overall: a flagged row is right when planted for a rule it names.
    """
    out = {}
    right = {t: ({labels[t]} if t in labels else set()) | (ALSO_RIGHT_ON_OUTLIERS if t in outliers else set())
             for t in alerts}
    for rule in rules:
        flagged = {t for t, fired in alerts.items() if rule in fired}
        planted = {t for t, label in labels.items() if label == rule}
        hits = {t for t in flagged if rule in right[t]}
        out[rule] = {"planted": len(planted), "alerts": len(flagged), "true_positives": len(hits),
                     "precision": len(hits) / len(flagged) if flagged else None,
                     "recall": len(flagged & planted) / len(planted) if planted else None}
    flagged, planted = set(alerts), set(labels)
    hits = {t for t in flagged if alerts[t] & right[t]}
    out["overall"] = {"planted": len(planted), "alerts": len(flagged), "true_positives": len(hits),
                      "precision": len(hits) / len(flagged) if flagged else None,
                      "recall": len(flagged & planted) / len(planted) if planted else None}
    return out


def format_scores(scores: dict[str, dict]) -> str:
    """The precision/recall table `make demo` and `make bench` print."""
    def pct(v):
        return "   -  " if v is None else f"{v:6.1%}"

    lines = [f"{'rule':<22}{'planted':>8}{'alerts':>8}{'hits':>6}{'precision':>11}{'recall':>8}"]
    for rule, s in scores.items():
        lines.append(f"{rule:<22}{s['planted']:>8}{s['alerts']:>8}{s['true_positives']:>6}"
                     f"{pct(s['precision']):>11}{pct(s['recall']):>8}")
    return "\n".join(lines)
