"""Fraud rules as data: `expectations/fraud_rules.json`, read and checked before any Spark work.

The suite has the format of every suite in `expectations/` (GX 1.x `type` and `kwargs`, and
`meta` with `rule` and `severity`), plus, per rule, a `weight` (its share of the alert score) and
`params` (how its feature is computed). Each rule is one
`expect_column_values_to_be_between` over one feature column (`RULES` below): the rows GX finds
unexpected are exactly the rows the rule flags. So one file holds each threshold once:

- the fraud stage reads it here and flags every row with `Rule.fires` (a Spark predicate with
  GX's semantics: a null feature is not judged; bounds inclusive unless `strict_min`/`strict_max`);
- the same stage runs the same suite as a GX checkpoint over the features for the report and
  Data Docs, and checks that GX's unexpected count of each rule equals its Spark flag count.

A suite with an unknown rule, a rule checking another column, a malformed threshold, weight,
severity or parameter fails in `load_rules` with an error naming the rule and the file. A rule
left out of the suite is switched off (its feature stays null).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxo.contract import CHANNELS, FRAUD_RULES, FRAUD_SEVERITIES
from fluxo.quality.suites import EXPECTATIONS_DIR, load_suites

SUITE = "fraud_rules"
EXPECTATION = "expect_column_values_to_be_between"
_KWARGS = {"column", "min_value", "max_value", "strict_min", "strict_max"}


class FraudSuiteError(ValueError):
    """The fraud suite cannot be used; the message names the file and the rule."""


# --- parameter checks: each returns the value as the stage uses it, or raises ValueError ------


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return value

    return check


def _amount(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive amount (reporting currency)")
    return float(value)


def _channels(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(v not in CHANNELS for v in value):
        raise ValueError(f"must be a non-empty list of channels from {list(CHANNELS)}")
    return tuple(sorted(set(value)))


def _mccs(value: Any) -> tuple[str, ...]:
    if (not isinstance(value, list) or not value
            or any(not isinstance(v, str) or len(v) != 4 or not v.isdigit() for v in value)):
        raise ValueError("must be a non-empty list of 4-digit merchant category codes (strings)")
    return tuple(sorted(set(value)))


HISTORY_DAYS = _integer(1, 90)
WINDOW_MINUTES = _integer(1, 24 * 60)


@dataclass(frozen=True)
class RuleSpec:
    """What the code knows of a rule: the feature column its expectation checks, its parameters."""

    name: str
    column: str
    params: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    about: str = ""


RULES: dict[str, RuleSpec] = {spec.name: spec for spec in (
    RuleSpec("velocity_10min", "txns_10min", {}, "many transactions of one card within 10 minutes"),
    RuleSpec("merchants_1h", "merchants_1h", {}, "one card at many merchants within an hour"),
    RuleSpec("amount_vs_median", "amount_to_median",
             {"history_days": HISTORY_DAYS, "min_history": _integer(1, 10_000)},
             "amount far above the customer's median over the previous days (earlier transactions only)"),
    RuleSpec("unusual_country", "prior_country_txns",
             {"history_days": HISTORY_DAYS, "min_history": _integer(1, 10_000), "card_present_channels": _channels},
             "card present in a country it was not used in during the previous days"),
    RuleSpec("impossible_travel", "travel_time_ratio", {"card_present_channels": _channels},
             "card present in two countries too quickly to travel between them"),
    RuleSpec("card_testing", "small_declines_before",
             {"small_amount": _amount, "window_minutes": WINDOW_MINUTES},
             "several small declined attempts, then an approval"),
    RuleSpec("duplicate_charge", "duplicate_charges", {"window_minutes": WINDOW_MINUTES},
             "the same card, merchant and amount approved again within minutes under another id"),
    RuleSpec("night_high_risk_mcc", "night_high_risk_amount",
             {"mccs": _mccs, "night_start_hour": _integer(0, 23), "night_end_hour": _integer(0, 24)},
             "a large amount at a high-risk merchant category at night, merchant's local time"),
)}
assert tuple(RULES) == FRAUD_RULES, "fluxo.contract.FRAUD_RULES and fluxo.fraud_rules.RULES must list the same rules"


@dataclass(frozen=True)
class Rule:
    """One rule as the suite sets it."""

    name: str
    column: str
    min_value: float | None
    max_value: float | None
    strict_min: bool
    strict_max: bool
    severity: str
    weight: float
    params: dict[str, Any]

    def fires(self, value=None):
        """The Spark condition under which this rule flags a row: the feature is not null and
        outside [min_value, max_value] (GX's `expect_column_values_to_be_between` unexpected rows)."""
        from pyspark.sql import functions as F

        value = F.col(self.column) if value is None else value
        inside = F.lit(True)
        if self.min_value is not None:
            inside = inside & ((value > self.min_value) if self.strict_min else (value >= self.min_value))
        if self.max_value is not None:
            inside = inside & ((value < self.max_value) if self.strict_max else (value <= self.max_value))
        return value.isNotNull() & ~inside

    def holds(self, value: float | None) -> bool:
        """The same condition for one Python value (tests, the DuckDB reference)."""
        if value is None:
            return False
        low = self.min_value is None or (value > self.min_value if self.strict_min else value >= self.min_value)
        high = self.max_value is None or (value < self.max_value if self.strict_max else value <= self.max_value)
        return not (low and high)


@dataclass(frozen=True)
class FraudRules:
    suite: dict
    rules: tuple[Rule, ...]

    def __getitem__(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)

    def get(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rules]

    @property
    def history_days(self) -> int:
        """Days of history before a scored day the enabled rules need (0 with none of them)."""
        return max((r.params["history_days"] for r in self.rules if "history_days" in r.params), default=0)

    @property
    def window_minutes(self) -> int:
        """The longest short look-back of the enabled rules (velocity 1 h, card testing, duplicates)."""
        return max([60, *(r.params["window_minutes"] for r in self.rules if "window_minutes" in r.params)])


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def parse_rule(expectation: dict, origin: str) -> Rule:
    """A checked Rule from one expectation of the suite; FraudSuiteError names what is wrong."""
    meta = expectation.get("meta") or {}
    name = meta.get("rule")

    def fail(problem: str) -> FraudSuiteError:
        return FraudSuiteError(f"{origin}: rule {name!r}: {problem}")

    if name not in RULES:
        raise FraudSuiteError(f"{origin}: unknown fraud rule {name!r} (known rules: {', '.join(RULES)})")
    spec = RULES[name]
    if expectation.get("type") != EXPECTATION:
        raise fail(f"must be a {EXPECTATION} expectation, not {expectation.get('type')!r}")
    kwargs = expectation.get("kwargs")
    if not isinstance(kwargs, dict):
        raise fail("needs kwargs")
    unknown = set(kwargs) - _KWARGS
    if unknown:
        raise fail(f"unknown kwargs {sorted(unknown)} (allowed: {sorted(_KWARGS)})")
    if kwargs.get("column") != spec.column:
        raise fail(f"must check the feature column {spec.column!r}, not {kwargs.get('column')!r}")
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    for key, value in (("min_value", low), ("max_value", high)):
        if value is not None and not _number(value):
            raise fail(f"malformed threshold {key}={value!r}: a number is needed")
    if low is None and high is None:
        raise fail("needs a threshold: min_value and/or max_value")
    if low is not None and high is not None and low > high:
        raise fail(f"min_value {low} is above max_value {high}")
    for key in ("strict_min", "strict_max"):
        if not isinstance(kwargs.get(key, False), bool):
            raise fail(f"{key} must be true or false")
    if meta.get("severity") not in FRAUD_SEVERITIES:
        raise fail(f"meta.severity must be one of {list(FRAUD_SEVERITIES)}")
    weight = meta.get("weight")
    if not _number(weight) or not 0 < weight <= 1:
        raise fail(f"meta.weight must be a number in (0, 1], not {weight!r}")
    given = meta.get("params") or {}
    if not isinstance(given, dict):
        raise fail("meta.params must be an object")
    missing, extra = set(spec.params) - set(given), set(given) - set(spec.params)
    if missing or extra:
        raise fail(f"meta.params must be exactly {sorted(spec.params)}"
                   + (f"; missing {sorted(missing)}" if missing else "") + (f"; unknown {sorted(extra)}" if extra else ""))
    params = {}
    for key, check in spec.params.items():
        try:
            params[key] = check(given[key])
        except ValueError as exc:
            raise fail(f"meta.params.{key}={given[key]!r} {exc}") from None
    return Rule(name, spec.column, None if low is None else float(low), None if high is None else float(high),
                bool(kwargs.get("strict_min", False)), bool(kwargs.get("strict_max", False)),
                meta["severity"], float(weight), params)


def parse_suite(suite: dict, origin: str = SUITE) -> FraudRules:
    rules = tuple(parse_rule(e, origin) for e in suite["expectations"])
    if not rules:
        raise FraudSuiteError(f"{origin}: the fraud suite enables no rule")
    return FraudRules(suite=suite, rules=rules)


def load_rules(
    root: str | Path = EXPECTATIONS_DIR, read_text: Callable[[str], str | None] | None = None, name: str = SUITE
) -> FraudRules:
    """The checked rules of `<root>/<name>.json` (`--expectations_root` locally or on S3)."""
    try:
        suite = load_suites([name], root, read_text)[0]
    except ValueError as exc:  # the suite format every suite shares (json, severity, duplicate rules)
        raise FraudSuiteError(str(exc)) from None
    return parse_suite(suite, f"{str(root).rstrip('/')}/{name}.json")
