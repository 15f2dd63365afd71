"""No row-level rule can fail a day: for every row expectation of the contract suite, a row that
would break it is quarantined by standardize first, and what standardize stages passes the suite."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from fluxo.contract import TRANSACTION
from fluxo.quality import load_suites, validate
from fluxo.quality.suites import CONTRACT_SUITE
from fluxo.transforms.standardize import SOURCE_FIELDS, load_fx_rates, standardize

LANDED = datetime(2026, 11, 26, 23, 0, tzinfo=timezone.utc)
VALID = {
    "transaction_id": "t-ok", "event_ts": "2026-11-26T13:00:00Z", "customer_id": "C1", "card_token": "tok_abc",
    "card_last4": "1234", "merchant_id": "M1", "mcc": "5411", "amount": "10.00", "currency": "BRL",
    "country": "BR", "channel": "pos", "status": "approved",
}
LINEAGE = {"source": "api", "batch_id": "b1", "ingested_at": LANDED}
# How to break a rule on a column standardize derives (no source field carries it as such).
DERIVED = {
    ("amount_reporting", "required"): {"currency": "JPY"},  # ISO 4217, no rate in the FX table
    ("amount_reporting", "min_exclusive"): {"amount": "0.50", "currency": "ARS"},  # 0.0027 BRL -> 0.00
    ("amount_reporting", "max_inclusive"): {"amount": "1000000000.01", "currency": "BRL"},
}


def violation(rule) -> dict:
    """A candidate's fields (source fields as text, lineage) that break `rule` and nothing before it."""
    if (rule.column, rule.kind) in DERIVED:
        return DERIVED[(rule.column, rule.kind)]
    broken = {
        "required": lambda: None,
        "closed_set": lambda: "zz-not-in-set",
        "pattern": lambda: "!!",
        "max_length": lambda: "tok_" + "x" * rule.value,  # a well-formed token (or id), too long
        "min_exclusive": lambda: str(rule.value),
    }[rule.kind]
    return {rule.column: broken()}


def candidate(tid: str, changes: dict):
    fields = {**VALID, **LINEAGE, "transaction_id": tid, **changes}
    amount = Decimal(fields["amount"]) if fields["amount"] is not None else None
    event_ts = datetime.fromisoformat(fields["event_ts"]) if fields["event_ts"] is not None else None
    return (f"raw {tid}", "file:/raw/api/batch=b1/page-0001.json", fields["source"], fields["batch_id"],
            fields["ingested_at"], None, None, *[fields[c] for c in SOURCE_FIELDS], amount, event_ts)


SCHEMA = (
    "raw_record string, source_file string, source string, batch_id string, ingested_at timestamp, _defect string,"
    " _event_id string, " + ", ".join(f"{c} string" for c in SOURCE_FIELDS)
    + ", _amount decimal(18,2), _event_ts timestamp"
)


@pytest.fixture(scope="module")
def outcome(spark):
    suite = load_suites([CONTRACT_SUITE])[0]
    row_expectations = {e["meta"]["rule"]: e for e in suite["expectations"] if e["kwargs"].get("column")
                        and e["meta"]["rule"] != "unique_key" and not e["meta"]["rule"].startswith("type:")}
    rules = TRANSACTION.row_rules()
    rows, cases = [candidate("t-ok", {}), candidate("t-ok", {"customer_id": "C2"})], {}  # the second: a copy
    for n, rule in enumerate(rules):
        tid = f"t-{n}-{rule.expectation}"
        rows.append(candidate(tid, violation(rule)))
        cases[tid] = rule
    out = standardize(spark.createDataFrame(rows, SCHEMA), load_fx_rates(spark), token_salt="s")
    checked = {r["raw_record"].removeprefix("raw "): r for r in out.checked.collect()}
    report = validate(out.staged, [suite])
    return {"rules": rules, "expectations": row_expectations, "cases": cases, "checked": checked,
            "staged": out.staged.collect(), "report": report}


def test_every_row_expectation_of_the_suite_is_a_contract_row_rule(outcome):
    assert set(outcome["expectations"]) == {r.expectation for r in outcome["rules"]}
    critical = {rule for rule, e in outcome["expectations"].items() if e["meta"]["severity"] == "critical"}
    assert {"required:amount_reporting", "range:amount_reporting", "closed_set:mcc", "closed_set:country",
            "pattern:card_token", "max_length:customer_id"} <= critical


def test_a_row_breaking_any_row_rule_is_quarantined_with_a_reason_naming_it(outcome):
    checked = outcome["checked"]
    # the precise checks that come before the contract's own reason for these rules
    earlier = {("amount", "min_exclusive"): "non_positive_amount", ("amount_reporting", "required"): "no_fx_rate:currency"}
    for tid, rule in outcome["cases"].items():
        assert checked[tid]["reason"] == earlier.get((rule.column, rule.kind), rule.reason), (rule, checked[tid]["reason"])


def test_what_standardize_stages_passes_every_critical_expectation(outcome):
    assert [r["transaction_id"] for r in outcome["staged"]] == ["t-ok"]  # one copy of the valid row, nothing else
    report = outcome["report"]
    assert report.success, [r["rule"] for r in report.critical_failures]
    evaluated = {r["rule"] for r in report.records}
    assert set(outcome["expectations"]) | {"unique_key", "contract_columns"} <= evaluated
