"""Expectation suites as data: the contract suite derived from `fluxo.contract`, the rest hand-written.

The files live in `expectations/` at the repo root, the one copy: a stage reads them at run
time from `--expectations_root` (that folder locally; on AWS, the copy `make deploy` uploads
next to the scripts), so editing a suite changes the next run with no code change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from fluxo import storage
from fluxo.contract import MAX_FUTURE_SKEW_SECONDS, TRANSACTION, Contract, column_rules

CONTRACT_SUITE = "transactions_contract"
BUSINESS_SUITE = "transactions_business"
DAY_SUITE = "transactions_day"
DEFAULT_SUITES = (CONTRACT_SUITE, BUSINESS_SUITE, DAY_SUITE)
SEVERITIES = ("critical", "warning")

# The suites of a checkout; stages are told where the suites are (`--expectations_root`).
EXPECTATIONS_DIR = Path(__file__).resolve().parents[2] / "expectations"


def _expectation(type_: str, kwargs: dict, severity: str, rule: str) -> dict:
    return {"type": type_, "kwargs": kwargs, "meta": {"severity": severity, "rule": rule}}


def _row_rule_expectations(column) -> list[dict]:
    """One expectation per row rule of the column (both bounds of a column in one `range:` expectation)."""
    kwargs_of = {
        "required": lambda r: ("expect_column_values_to_not_be_null", {}),
        "closed_set": lambda r: ("expect_column_values_to_be_in_set", {"value_set": list(r.value)}),
        "pattern": lambda r: ("expect_column_values_to_match_regex", {"regex": r.value}),
        "max_length": lambda r: ("expect_column_value_lengths_to_be_between", {"max_value": r.value}),
        "min_exclusive": lambda r: ("expect_column_values_to_be_between", {"min_value": r.value, "strict_min": True}),
        "max_inclusive": lambda r: ("expect_column_values_to_be_between", {"max_value": r.value}),
    }
    by_rule: dict[str, dict] = {}
    for rule in column_rules(column):
        type_, kwargs = kwargs_of[rule.kind](rule)
        if rule.expectation in by_rule:
            by_rule[rule.expectation]["kwargs"].update(kwargs)
        else:
            by_rule[rule.expectation] = _expectation(type_, {"column": column.name, **kwargs}, rule.severity, rule.expectation)
    return list(by_rule.values())


def build_contract_suite(contract: Contract = TRANSACTION, name: str = CONTRACT_SUITE) -> dict:
    """The suite that checks a DataFrame against the contract, one rule per contract property.

    The row rules come from `Contract.row_rules` (required, closed sets, patterns, lengths,
    bounds), the same list standardize quarantines by, so a staged row never breaks one; they
    stay critical here as the gate's proof of that. A pattern on an optional column is a
    warning (the row is still usable).
    """
    schema = contract.spark_schema()
    expectations = [
        _expectation(
            "expect_table_columns_to_match_set",
            {"column_set": contract.names, "exact_match": False},
            "critical",
            "contract_columns",
        )
    ]
    for column in contract.columns:
        spark_type = type(schema[column.name].dataType).__name__
        expectations.append(
            _expectation(
                "expect_column_values_to_be_of_type",
                {"column": column.name, "type_": spark_type},
                "critical",
                f"type:{column.name}",
            )
        )
        expectations.extend(_row_rule_expectations(column))
    if len(contract.key) == 1:
        expectations.append(
            _expectation(
                "expect_column_values_to_be_unique", {"column": contract.key[0]}, "critical", "unique_key"
            )
        )
    elif contract.key:
        expectations.append(
            _expectation(
                "expect_compound_columns_to_be_unique",
                {"column_list": list(contract.key)},
                "critical",
                "unique_key",
            )
        )
    if contract is TRANSACTION:
        # Standardize already quarantines these rows (future_event_ts), so finding
        # one here is a warning about that stage, not a reason to stop the run.
        rule = _expectation(
            "unexpected_rows_expectation",
            {
                "unexpected_rows_query": "SELECT transaction_id, event_ts, ingested_at FROM {batch} "
                f"WHERE event_ts > ingested_at + INTERVAL {MAX_FUTURE_SKEW_SECONDS} SECONDS"
            },
            "warning",
            "future_event_ts",
        )
        rule["meta"]["column"] = "event_ts"
        expectations.append(rule)
    return {
        "name": name,
        "meta": {
            "generated_from": f"fluxo.contract.{contract.name.upper()}",
            "regenerate": "python -m fluxo.quality build-suites",
        },
        "expectations": expectations,
    }


_STRING_LIST = re.compile(r'^( *)"(\w+)": \[\n((?: *"[^"\n]*",?\n)+) *\]', re.MULTILINE)


def _wrap_string_lists(text: str, width: int = 100) -> str:
    """Lists of strings (column and value sets: up to ~1,300 codes) filled into lines of `width`."""

    def fill(match: re.Match) -> str:
        indent, key = match.group(1), match.group(2)
        items = [json.dumps(v, ensure_ascii=False) for v in json.loads("[" + match.group(3).rstrip(",\n") + "]")]
        lines, line = [], ""
        for item in items:
            if line and len(indent) + 2 + len(line) + len(item) + 3 > width:
                lines.append(line + ",")
                line = ""
            line = f"{line}, {item}" if line else item
        lines.append(line)
        body = "\n".join(f"{indent}  {entry}" for entry in lines)
        return f'{indent}"{key}": [\n{body}\n{indent}]'

    return _STRING_LIST.sub(fill, text)


def suite_text(suite: dict) -> str:
    """The on-disk form of a suite (stable, so the drift test can compare text)."""
    return _wrap_string_lists(json.dumps(suite, indent=2, ensure_ascii=False)) + "\n"


def _check(suite: dict, origin: str) -> dict:
    if not isinstance(suite.get("name"), str) or not isinstance(suite.get("expectations"), list):
        raise ValueError(f"{origin}: a suite needs a 'name' and a list of 'expectations'")
    rules = set()
    for index, expectation in enumerate(suite["expectations"]):
        meta = expectation.get("meta") or {}
        if meta.get("severity") not in SEVERITIES or not meta.get("rule"):
            raise ValueError(
                f"{origin}: expectation #{index} ({expectation.get('type')}) needs "
                f"meta.severity in {SEVERITIES} and a meta.rule"
            )
        if meta["rule"] in rules:
            raise ValueError(f"{origin}: rule {meta['rule']!r} appears twice (rules name results)")
        rules.add(meta["rule"])
    return suite


def load_suites(
    names: list[str] | tuple[str, ...] = DEFAULT_SUITES,
    root: str | Path = EXPECTATIONS_DIR,
    read_text: Callable[[str], str | None] | None = None,
) -> list[dict]:
    """The named suites as dicts, from `<root>/<name>.json`.

    Stages get the root as `--expectations_root` (the repository's `expectations/` locally,
    the deployed copy on S3 under AWS Glue); `read_text` reads a file of it (default: a local
    folder or S3, `fluxo.storage`).
    """
    read_text = read_text or storage.read_text
    suites = []
    for name in names:
        origin = f"{str(root).rstrip('/')}/{name}.json"
        text = read_text(origin)
        if text is None:
            raise FileNotFoundError(f"no expectation suite {name!r} in {root}")
        suite = _check(json.loads(text), origin)
        if suite["name"] != name:
            raise ValueError(f"{origin}: suite is named {suite['name']!r}, expected {name!r}")
        suites.append(suite)
    return suites


def build_suites(expectations_dir: Path = EXPECTATIONS_DIR) -> list[Path]:
    """Write the suite derived from the contract into `expectations/`. Returns the files written."""
    contract_path = expectations_dir / f"{CONTRACT_SUITE}.json"
    contract_path.write_text(suite_text(build_contract_suite()), encoding="utf-8")
    for path in sorted(expectations_dir.glob("*.json")):
        _check(json.loads(path.read_text(encoding="utf-8")), str(path))
    return [contract_path]
