"""Expectation suites as data: the contract suite derived from `fluxo.contract`, the rest hand-written.

The files live in `expectations/` at the repo root, the one copy: a stage reads them at run
time from `--expectations_root` (that folder locally; on AWS, the copy `make deploy` uploads
next to the scripts), so editing a suite changes the next run with no code change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fluxo import storage
from fluxo.contract import MAX_FUTURE_SKEW_SECONDS, TRANSACTION, Contract

CONTRACT_SUITE = "transactions_contract"
BUSINESS_SUITE = "transactions_business"
DEFAULT_SUITES = (CONTRACT_SUITE, BUSINESS_SUITE)
SEVERITIES = ("critical", "warning")

# The suites of a checkout; stages are told where the suites are (`--expectations_root`).
EXPECTATIONS_DIR = Path(__file__).resolve().parents[2] / "expectations"


def _expectation(type_: str, kwargs: dict, severity: str, rule: str) -> dict:
    return {"type": type_, "kwargs": kwargs, "meta": {"severity": severity, "rule": rule}}


def build_contract_suite(contract: Contract = TRANSACTION, name: str = CONTRACT_SUITE) -> dict:
    """The suite that checks a DataFrame against the contract, one rule per contract property.

    Rules on required columns are critical (a row without them cannot be used);
    a pattern on an optional column is a warning (the row is still usable).
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
        if column.required:
            expectations.append(
                _expectation(
                    "expect_column_values_to_not_be_null",
                    {"column": column.name},
                    "critical",
                    f"required:{column.name}",
                )
            )
        if column.allowed is not None:
            expectations.append(
                _expectation(
                    "expect_column_values_to_be_in_set",
                    {"column": column.name, "value_set": list(column.allowed)},
                    "critical",
                    f"closed_set:{column.name}",
                )
            )
        if column.regex is not None:
            expectations.append(
                _expectation(
                    "expect_column_values_to_match_regex",
                    {"column": column.name, "regex": column.regex},
                    "critical" if column.required else "warning",
                    f"pattern:{column.name}",
                )
            )
        if column.min_exclusive is not None:
            expectations.append(
                _expectation(
                    "expect_column_values_to_be_between",
                    {"column": column.name, "min_value": column.min_exclusive, "strict_min": True},
                    "critical",
                    f"min_exclusive:{column.name}",
                )
            )
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


def suite_text(suite: dict) -> str:
    """The on-disk form of a suite (stable, so the drift test can compare text)."""
    return json.dumps(suite, indent=2, ensure_ascii=False) + "\n"


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
