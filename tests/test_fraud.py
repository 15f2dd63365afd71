"""Fraud rules: each rule fires on a crafted positive and stays silent on its near-miss negative
(DataFrames built here, the session's local Spark), the edge cases (no history, a card seen once,
null optional fields, unknown reference data), rules as data (a threshold edited in a copy of the
suite changes the alerts; a malformed suite is refused naming the rule), and GX counting what
Spark flags."""

from __future__ import annotations

import copy
import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from fluxo.contract import FRAUD_ALERT, TRANSACTION
from fluxo.fraud_rules import FraudSuiteError, load_rules, parse_suite
from fluxo.quality.suites import EXPECTATIONS_DIR
from fluxo.transforms import fraud

DAY = "2026-11-26"
NOON = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
DETECTED_AT = datetime(2026, 11, 27, 6, 0, tzinfo=timezone.utc)
RULES = load_rules()


def suite() -> dict:
    return json.loads((EXPECTATIONS_DIR / "fraud_rules.json").read_text())


def tx(tid: str, minute: float, card: str = "K1", customer: str | None = None, merchant: str = "M1",
       amount: float = 50.0, status: str = "approved", channel: str = "pos", country: str = "BR",
       mcc: str = "5411", currency: str = "BRL", last4: str | None = "1234") -> dict:
    """A curated transaction `minute` minutes after noon UTC of DAY (negative: earlier days)."""
    return {
        "transaction_id": tid, "source": "api", "event_ts": NOON + timedelta(minutes=minute),
        "customer_id": customer or f"C-{card}", "card_token": f"tok_{card}", "card_last4": last4,
        "merchant_id": merchant, "mcc": mcc, "amount": Decimal(str(amount)), "currency": currency,
        "amount_reporting": Decimal(str(amount)), "country": country, "channel": channel, "status": status,
        "batch_id": "b1", "ingested_at": DETECTED_AT,
    }


def frame(spark, rows: list[dict]):
    return spark.createDataFrame([tuple(r[c] for c in TRANSACTION.names) for r in rows], TRANSACTION.spark_schema())


def score(spark, rows: list[dict], rules=RULES, dates=(DAY,)):
    """{transaction_id: set of rules that fired} and the features of every scored row."""
    feats = fraud.features(frame(spark, rows), list(dates), rules)
    found = fraud.alerts(feats, rules, "run-1", DETECTED_AT).collect()
    return {r["transaction_id"]: set(r["rules"].split(",")) for r in found}, {
        r["transaction_id"]: r.asDict() for r in feats.collect()}


def fired(found: dict, rule: str) -> set[str]:
    return {tid for tid, rules in found.items() if rule in rules}


# --- one rule at a time: the crafted positive fires, its near misses stay silent -----------------
# Every scenario uses cards and customers of its own, so all of them are scored in ONE Spark run
# (the `scored` fixture) and each test reads its scenario's rows.

MINIMUM_BR_US = fraud.travel_minutes_table()[frozenset(("BR", "US"))]
at = lambda utc_hour: (utc_hour - 12) * 60  # noqa: E731 - minutes from noon UTC of DAY


def velocity_rows():
    rows = [tx(f"v{i}", 2 * i, card="vel1", amount=10 + i) for i in range(6)]            # 6 within 10 min
    rows += [tx(f"f{i}", 2 * i, card="vel2", amount=10 + i) for i in range(5)]           # 5: near miss
    rows += [tx(f"s{i}", 2.5 * i, card="vel3", amount=10 + i) for i in range(6)]         # 6 over 12.5 min
    # a burst from 23:56 the day before to 00:04 (minutes from noon of DAY)
    return rows + [tx(f"m{i}", -724 + 1.5 * i, card="vel4", amount=10 + i) for i in range(6)]


def merchant_rows():
    rows = [tx(f"p{i}", 8 * i, card="mer1", merchant=f"M{i}", amount=20 + i) for i in range(8)]     # 8 in [0, 56]
    rows += [tx(f"n{i}", 8 * i, card="mer2", merchant=f"M{i % 7}", amount=20 + i) for i in range(8)]  # 7 merchants
    return rows + [tx(f"o{i}", 8.6 * i, card="mer3", merchant=f"M{i}", amount=20 + i) for i in range(8)]  # 60.2 min


def amount_rows():
    def history(card, n, days_back=2):
        return [tx(f"{card}-h{i}", -days_back * 1440 - i, card=card, amount=50 + i) for i in range(n)]

    rows = history("amtA", 5) + [tx("spike", 0, card="amtA", amount=9000)]            # 9000 / 52 = 173 > 150
    rows += history("amtB", 5) + [tx("splurge", 0, card="amtB", amount=7500)]         # 144: near miss
    rows += history("amtC", 4) + [tx("thin", 0, card="amtC", amount=9000)]            # 4 earlier: too few
    rows += history("amtD", 5, days_back=31) + [tx("old", 0, card="amtD", amount=9000)]  # beyond 30 days
    # no look-ahead: the spike comes first, the ordinary purchases after it
    return rows + [tx("first", 0, card="amtE", amount=9000)] + [
        tx(f"amtE-l{i}", 15 * (i + 1), card="amtE", amount=50) for i in range(6)]


def country_rows():
    def home(card, n, extra=()):
        return [tx(f"{card}-h{i}", -3 * 1440 + 10 * i, card=card) for i in range(n)] + list(extra)

    rows = home("cty1", 3) + [tx("abroad", 0, card="cty1", country="US", currency="USD")]
    rows += home("cty2", 3, [tx("cty2-us", -2 * 1440, card="cty2", country="US")]) + [
        tx("back", 0, card="cty2", country="US")]                                      # was there before
    rows += home("cty3", 2) + [tx("young", 0, card="cty3", country="US")]              # 2 card-present: too few
    return rows + home("cty4", 3) + [tx("online", 0, card="cty4", country="US", channel="ecommerce")]


def travel_rows():
    rows = [tx("tr1-br", 0, card="tr1"), tx("jump", MINIMUM_BR_US - 30, card="tr1", country="US")]
    rows += [tx("tr2-br", 0, card="tr2"), tx("flight", MINIMUM_BR_US + 20, card="tr2", country="US")]  # near miss
    rows += [tx("tr3-br", 0, card="tr3"), tx("border", 10, card="tr3", country="AR")]                  # land border
    rows += [tx("tr4-br", 0, card="tr4"), tx("web", 10, card="tr4", country="US", channel="ecommerce")]
    return rows + [tx("tr5-us", -760, card="tr5", country="US"), tx("overnight", -660, card="tr5")]  # over midnight


def card_testing_rows():
    def attempts(card, amounts, start=0, gap=5):
        return [tx(f"{card}-d{i}", start + gap * i, card=card, amount=a, status="declined", channel="ecommerce")
                for i, a in enumerate(amounts)]

    rows = attempts("ct1", [1, 2, 5]) + [tx("worked", 15, card="ct1", amount=300, channel="ecommerce")]
    rows += attempts("ct2", [1, 2]) + [tx("two", 15, card="ct2", amount=300)]                # two declines only
    rows += attempts("ct3", [50, 60, 70]) + [tx("large", 15, card="ct3", amount=300)]        # not small amounts
    return rows + attempts("ct4", [1, 2, 5], start=-40, gap=1) + [tx("late", 0, card="ct4", amount=300)]  # > 30 min


def duplicate_rows():
    rows = [tx("charge", 0, card="dup1", amount=99.90), tx("again", 3, card="dup1", amount=99.90)]
    rows += [tx("dup2-a", 0, card="dup2", amount=99.90), tx("later", 7, card="dup2", amount=99.90)]      # 7 min
    rows += [tx("dup3-a", 0, card="dup3", amount=99.90), tx("cent", 2, card="dup3", amount=99.91)]       # other amount
    rows += [tx("dup4-a", 0, card="dup4", amount=99.90, status="declined"), tx("retry", 1, card="dup4", amount=99.90)]
    rows += [tx("dup5-a", 0, card="dup5", amount=99.90), tx("shop", 1, card="dup5", merchant="M2", amount=99.90)]
    return rows + [tx("same-a", 30, card="dup6", amount=10), tx("same-b", 30, card="dup6", amount=10)]  # same second


def night_rows():
    # 05:00 UTC is 02:00 in São Paulo; 07:00 UTC is 02:00 in New York (EST in late November)
    return [
        tx("bet", at(5), card="nt1", mcc="7995", amount=2500),
        tx("day", at(17), card="nt2", mcc="7995", amount=2500),                          # 14:00 local
        tx("small", at(5), card="nt3", mcc="7995", amount=1500),                         # below 2000
        tx("grocery", at(5), card="nt4", mcc="5411", amount=2500),                       # ordinary MCC
        tx("dawn", at(8), card="nt5", mcc="4829", amount=2500),                          # 05:00: night is over
        tx("ny", at(7), card="nt6", mcc="5944", amount=2500, country="US", currency="USD"),
    ]


def evidence_rows():
    return [tx(f"ev1-h{i}", -2 * 1440 + i, card="ev1", amount=40) for i in range(5)] + [
        tx("ev1-br", 0, card="ev1", amount=40), tx("both", 60, card="ev1", country="US", amount=7000)]


def edge_rows():
    return [
        tx("once", 0, card="edge1", last4=None, mcc="7995", amount=2500),   # 09:00 local: nothing to flag
        tx("edge2-br", 0, card="edge2"), tx("nowhere", 5, card="edge2", country="ZZ", mcc="7995", amount=9000),
    ]


SCENARIOS = (velocity_rows, merchant_rows, amount_rows, country_rows, travel_rows, card_testing_rows, duplicate_rows,
             night_rows, evidence_rows, edge_rows)


@pytest.fixture(scope="module")
def scored(spark):
    """Every scenario scored in one run: (alerts by id, features by id, alert rows, features DataFrame)."""
    rows = [r for scenario in SCENARIOS for r in scenario()]
    feats = fraud.features(frame(spark, rows), [DAY], RULES).cache()
    alert_rows = fraud.alerts(feats, RULES, "run-1", DETECTED_AT).collect()
    found = {r["transaction_id"]: set(r["rules"].split(",")) for r in alert_rows}
    yield found, {r["transaction_id"]: r.asDict() for r in feats.collect()}, alert_rows, feats
    feats.unpersist()


def only(scored, scenario) -> tuple[dict, dict]:
    """The alerts and features of one scenario's rows."""
    found, feats = scored[0], scored[1]
    ids = {r["transaction_id"] for r in scenario()}
    return {k: v for k, v in found.items() if k in ids}, {k: v for k, v in feats.items() if k in ids}


def test_velocity_counts_a_cards_transactions_in_ten_minutes_across_midnight(scored):
    found, feats = only(scored, velocity_rows)
    assert fired(found, "velocity_10min") == {"v5", "m5"}
    assert feats["v5"]["txns_10min"] == 6 and feats["f4"]["txns_10min"] == 5 and feats["s5"]["txns_10min"] == 5
    assert "m0" not in feats, "rows of the day before are look-back only, not scored"


def test_merchants_per_hour(scored):
    found, feats = only(scored, merchant_rows)
    assert fired(found, "merchants_1h") == {"p7"}
    assert (feats["p7"]["merchants_1h"], feats["n7"]["merchants_1h"], feats["o7"]["merchants_1h"]) == (8, 7, 7)
    assert feats["p7"]["txns_1h"] == 8 and feats["p7"]["merchants_10min"] == 2


def test_amount_against_the_customers_earlier_median(scored):
    found, feats = only(scored, amount_rows)
    assert fired(found, "amount_vs_median") == {"spike"}
    assert feats["spike"]["customer_history_txns"] == 5 and feats["spike"]["customer_median"] == 52.0
    assert feats["spike"]["amount_to_median"] == pytest.approx(9000 / 52)
    assert feats["thin"]["amount_to_median"] is None and feats["thin"]["customer_history_txns"] == 4
    assert feats["old"]["customer_history_txns"] == 0 and feats["first"]["customer_history_txns"] == 0
    assert feats["amtE-l5"]["customer_history_txns"] == 6  # the spike and five purchases before it


def test_card_present_in_a_country_not_seen_before(scored):
    found, feats = only(scored, country_rows)
    assert fired(found, "unusual_country") == {"abroad"}
    assert feats["abroad"]["prior_country_txns"] == 0 and feats["abroad"]["usual_country"] == "BR"
    assert feats["abroad"]["card_present_history"] == 3
    assert feats["back"]["prior_country_txns"] == 1 and feats["young"]["prior_country_txns"] is None
    assert feats["online"]["card_present_history"] is None


def test_impossible_travel_uses_the_minimum_travel_time_per_country_pair(scored):
    found, feats = only(scored, travel_rows)
    assert fired(found, "impossible_travel") == {"jump", "overnight"}
    jump = feats["jump"]
    assert (jump["prev_country"], jump["travel_minutes"], jump["min_travel_minutes"]) == (
        "BR", MINIMUM_BR_US - 30, MINIMUM_BR_US)
    assert jump["travel_time_ratio"] == pytest.approx((MINIMUM_BR_US - 30) / MINIMUM_BR_US)
    assert feats["flight"]["travel_time_ratio"] > 1
    assert feats["border"]["min_travel_minutes"] == 0 and feats["border"]["travel_time_ratio"] is None
    assert feats["web"]["prev_country"] is None


def test_card_testing_is_small_declines_then_an_approval(scored):
    found, feats = only(scored, card_testing_rows)
    assert fired(found, "card_testing") == {"worked"}
    assert feats["worked"]["small_declines_before"] == 3 and feats["two"]["small_declines_before"] == 2
    assert feats["ct1-d2"]["small_declines_before"] is None  # judged on approvals only


def test_duplicate_charge_needs_the_same_card_merchant_and_amount_within_minutes(scored):
    found, feats = only(scored, duplicate_rows)
    assert fired(found, "duplicate_charge") == {"again", "same-a", "same-b"}
    assert feats["again"]["duplicate_charges"] == 1 and feats["charge"]["duplicate_charges"] == 0


def test_high_risk_mcc_at_night_in_the_merchant_countrys_local_time(scored):
    found, feats = only(scored, night_rows)
    assert fired(found, "night_high_risk_mcc") == {"bet", "ny"}
    assert feats["bet"]["local_hour"] == 2 and feats["ny"]["local_hour"] == 2 and feats["dawn"]["local_hour"] == 5
    assert feats["small"]["night_high_risk_amount"] == Decimal("1500.00")
    assert feats["grocery"]["night_high_risk_amount"] is None


def test_no_scenario_fires_a_rule_it_was_not_built_for(scored):
    expected = {"v5": {"velocity_10min"}, "m5": {"velocity_10min"}, "p7": {"merchants_1h"},
                "spike": {"amount_vs_median"}, "abroad": {"unusual_country"}, "jump": {"impossible_travel"},
                "overnight": {"impossible_travel"}, "worked": {"card_testing"}, "again": {"duplicate_charge"},
                "same-a": {"duplicate_charge"}, "same-b": {"duplicate_charge"}, "bet": {"night_high_risk_mcc"},
                "ny": {"night_high_risk_mcc"}, "both": {"amount_vs_median", "impossible_travel", "unusual_country"}}
    assert scored[0] == expected


# --- alerts, edge cases ----------------------------------------------------------------------------


def test_an_alert_carries_its_rules_score_severity_and_evidence(scored):
    alert_rows = scored[2]
    assert scored[3].columns == [*TRANSACTION.names, "event_date", *fraud.FEATURES]
    alert_schema = fraud.alerts(scored[3], RULES, "run-1", DETECTED_AT).schema
    assert [(f.name, f.dataType) for f in alert_schema] == [(f.name, f.dataType) for f in FRAUD_ALERT.spark_schema()]
    (alert,) = [r.asDict() for r in alert_rows if r["transaction_id"] == "both"]
    assert alert["rules"] == "amount_vs_median,impossible_travel,unusual_country" and alert["rule_count"] == 3
    weights = [RULES[n].weight for n in alert["rules"].split(",")]
    assert alert["score"] == pytest.approx(1 - (1 - weights[0]) * (1 - weights[1]) * (1 - weights[2]), abs=1e-6)
    assert alert["severity"] == "critical"  # impossible_travel is critical in the suite
    assert alert["card_token"] == "tok_ev1" and alert["event_date"] == date(2026, 11, 26)
    assert alert["prev_country"] == "BR" and alert["usual_country"] == "BR" and alert["amount_to_median"] == 175.0
    assert alert["run_id"] == "run-1" and alert["detected_at"] == DETECTED_AT.replace(tzinfo=None)
    assert {r["severity"] for r in alert_rows if r["transaction_id"] == "bet"} == {"warning"}


def test_first_day_a_card_seen_once_and_a_customer_with_one_transaction(scored):
    one = scored[1]["once"]
    assert (one["txns_10min"], one["txns_1h"], one["merchants_1h"]) == (1, 1, 1)
    assert one["customer_history_txns"] == 0 and one["amount_to_median"] is None and one["customer_median"] is None
    assert one["card_present_history"] == 0 and one["prior_country_txns"] is None and one["usual_country"] is None
    assert one["prev_country"] is None and one["travel_time_ratio"] is None
    assert one["small_declines_before"] == 0 and one["duplicate_charges"] == 0 and one["card_last4"] is None
    assert "once" not in scored[0]


def test_unknown_countries_are_not_judged(scored):
    nowhere = scored[1]["nowhere"]
    assert nowhere["local_hour"] is None and nowhere["min_travel_minutes"] is None
    assert nowhere["prev_country"] == "BR" and nowhere["travel_time_ratio"] is None
    assert "nowhere" not in scored[0]


def test_empty_input_scores_nothing(spark):
    feats = fraud.features(frame(spark, []), [DAY], RULES)
    assert feats.count() == 0 and fraud.alerts(feats, RULES, "r", DETECTED_AT).count() == 0


# --- rules are data ------------------------------------------------------------------------------


def test_a_threshold_edited_in_a_copy_of_the_suite_changes_the_alerts(spark, scored, tmp_path):
    edited = suite()
    velocity = next(e for e in edited["expectations"] if e["meta"]["rule"] == "velocity_10min")
    velocity["kwargs"]["max_value"] = 4
    # a rule left out of the suite is off: its feature stays null
    edited["expectations"] = [e for e in edited["expectations"] if e["meta"]["rule"] != "card_testing"]
    (tmp_path / "fraud_rules.json").write_text(json.dumps(edited))
    changed = load_rules(tmp_path)
    assert "card_testing" not in changed.names
    found, feats = score(spark, velocity_rows() + card_testing_rows(), changed)
    before = only(scored, velocity_rows)[0]
    assert fired(before, "velocity_10min") == {"v5", "m5"}
    assert fired(found, "velocity_10min") == {"v4", "v5", "f4", "s4", "s5", "m4", "m5"}  # 5 in 10 min now fire
    assert "worked" in scored[0] and "worked" not in found
    assert feats["worked"]["small_declines_before"] is None


@pytest.mark.parametrize("change, message", [
    (lambda e: e["meta"].update(rule="velocity_5min"), "unknown fraud rule 'velocity_5min'"),
    (lambda e: e["kwargs"].update(max_value="5"), "rule 'velocity_10min': malformed threshold max_value='5'"),
    (lambda e: e["kwargs"].update(min_value=9), "rule 'velocity_10min': min_value 9 is above max_value 5"),
    (lambda e: e["kwargs"].pop("max_value"), "rule 'velocity_10min': needs a threshold"),
    (lambda e: e["kwargs"].update(column="txns_1h"), "rule 'velocity_10min': must check the feature column 'txns_10min'"),
    (lambda e: e["kwargs"].update(mostly=0.9), "rule 'velocity_10min': unknown kwargs ['mostly']"),
    (lambda e: e.update(type="expect_column_values_to_be_in_set"), "rule 'velocity_10min': must be a expect_column"),
    (lambda e: e["meta"].update(weight=1.5), "rule 'velocity_10min': meta.weight must be a number in (0, 1]"),
    (lambda e: e["meta"].update(severity="info"), "severity"),
    (lambda e: e["meta"]["params"].update(window_minutes=10), "rule 'velocity_10min': meta.params must be exactly []"),
])
def test_a_malformed_suite_is_refused_naming_the_rule(tmp_path, change, message):
    edited = suite()
    change(edited["expectations"][0])
    (tmp_path / "fraud_rules.json").write_text(json.dumps(edited))
    with pytest.raises(FraudSuiteError, match=None) as refused:
        load_rules(tmp_path)
    assert message in str(refused.value) and str(tmp_path) in str(refused.value)


@pytest.mark.parametrize("rule, param, value", [
    ("card_testing", "small_amount", -1), ("card_testing", "window_minutes", 0),
    ("night_high_risk_mcc", "mccs", ["79"]), ("night_high_risk_mcc", "night_end_hour", 25),
    ("unusual_country", "card_present_channels", ["teleport"]), ("amount_vs_median", "history_days", "30"),
])
def test_a_malformed_parameter_is_refused_naming_the_rule(rule, param, value):
    edited = suite()
    next(e for e in edited["expectations"] if e["meta"]["rule"] == rule)["meta"]["params"][param] = value
    with pytest.raises(FraudSuiteError, match=f"rule '{rule}': meta.params.{param}="):
        parse_suite(edited)


def test_gx_counts_exactly_the_rows_spark_flags(scored):
    from fluxo.quality import validate

    feats = scored[3]
    spark_counts = fraud.rule_counts(feats, RULES)
    report = validate(feats, [copy.deepcopy(RULES.suite)])
    assert {r["rule"]: r["unexpected_count"] for r in report.records} == spark_counts
    assert spark_counts == {"velocity_10min": 2, "merchants_1h": 1, "amount_vs_median": 2, "unusual_country": 2,
                            "impossible_travel": 3, "card_testing": 1, "duplicate_charge": 3, "night_high_risk_mcc": 2}


def test_a_day_with_nothing_to_score_has_gx_and_spark_agree_on_no_rows(spark):
    """GX reports no count for an empty batch; the stage's cross-check must not fail a day with nothing curated."""
    from fluxo.quality import validate

    feats = fraud.features(frame(spark, []), [DAY], RULES)
    report = validate(feats, [copy.deepcopy(RULES.suite)])
    assert report.rows == 0
    assert fraud.checkpoint_rule_counts(report.records, report.rows) == fraud.rule_counts(feats, RULES)
    assert set(fraud.rule_counts(feats, RULES).values()) == {0}


def test_the_duckdb_reference_flags_the_same_rows_as_spark(scored):
    """fluxo_dev.fraud_reference (DuckDB SQL, the e2e test's and the benchmark's reference) agrees
    with the Spark stage on every crafted scenario."""
    import duckdb
    import pyarrow as pa

    from fluxo_dev.fraud_reference import reference_alerts

    rows = [r for scenario in SCENARIOS for r in scenario()]
    source = pa.Table.from_pylist([{c: r[c] for c in TRANSACTION.names} for r in rows], TRANSACTION.arrow_schema())
    con = duckdb.connect()
    con.register("source", source)
    assert reference_alerts(con, [DAY], RULES) == scored[0]


@pytest.mark.parametrize("notes", ["as in the suite file", "a plain string that names result_format"])
def test_the_fraud_checkpoint_renders_its_data_docs_page(scored, tmp_path, caplog, notes):
    """GX renders suite notes in its own shape ({format, content}); given a plain string holding the
    word "format", its validation page renderer failed and the page was silently left out."""
    import logging

    from fluxo.quality import validate

    suite = copy.deepcopy(RULES.suite)
    if notes != "as in the suite file":
        suite["meta"]["notes"] = notes
    docs = tmp_path / "data_docs"
    with caplog.at_level(logging.ERROR, logger="great_expectations"):
        validate(scored[3], [suite], str(docs), run_name=f"fraud ingest_date={DAY}")
    assert not [r.getMessage()[:300] for r in caplog.records if r.levelno >= logging.ERROR]
    pages = list((docs / "validations").rglob("*.html"))
    assert len(pages) == 1
    assert all(f.column in pages[0].read_text(encoding="utf-8") for f in RULES.rules)
