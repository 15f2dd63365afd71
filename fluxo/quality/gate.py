"""Run expectation suites over Spark DataFrames with GX 1.x Checkpoints and judge the result.

Each suite names what it validates in `meta.validates` (default `staged_transactions`, the
day's staged rows; `day_profile` is the one-row-per-source profile of fluxo.quality.day) and may
ask for its own `meta.result_format` (the day suite lists the offending sources). Critical
failures stop the run (`QualityGateFailed`); warnings are only recorded.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from fluxo.tokenize import mask_pans

RESULT_FORMAT = {"result_format": "SUMMARY"}
# On a clean day each column rule would scan every row for example values it cannot find (at
# 934,739 staged rows: 7.0-7.3 s against 4.0 s): count first, and run again with examples only
# when a rule found rows.
COUNTS_ONLY = {**RESULT_FORMAT, "partial_unexpected_count": 0}
STAGED = "staged_transactions"
DOCS_SITE = "fluxo"
RESULTS_STORE = "gx_validation_results"
# Long value sets make failure messages unreadable; show the first few.
_MAX_LISTED_VALUES = 5


class QualityGateFailed(Exception):
    """At least one critical expectation failed; the message names every one."""

    def __init__(self, report: QualityReport):
        self.report = report
        super().__init__("; ".join(describe_failure(r) for r in report.critical_failures))


@dataclass
class QualityReport:
    records: list[dict]
    rows: int | None
    seconds: float
    validated_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    data_docs_index: str | None = None

    @property
    def critical_failures(self) -> list[dict]:
        return [r for r in self.records if not r["success"] and r["severity"] == "critical"]

    @property
    def warnings(self) -> list[dict]:
        return [r for r in self.records if not r["success"] and r["severity"] == "warning"]

    @property
    def success(self) -> bool:
        return not self.critical_failures

    def stats(self) -> dict:
        return {
            "stage": "quality_gate",
            "critical_failed": len(self.critical_failures),
            "warnings_failed": len(self.warnings),
            "evaluated": len(self.records),
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
        }

    def document(self, ingest_date: str | None = None) -> dict:
        """The validation.json document: run totals plus `results`, one record per expectation."""
        return {
            "ingest_date": ingest_date,
            "validated_at": self.validated_at,
            "success": self.success,
            **self.stats(),
            "results": self.records,
        }

    def raise_for_critical(self) -> None:
        if self.critical_failures:
            raise QualityGateFailed(self)


def _short(value):
    if isinstance(value, list) and len(value) > _MAX_LISTED_VALUES:
        return "[" + ", ".join(map(str, value[:_MAX_LISTED_VALUES])) + f", … {len(value)} values]"
    return value


def describe_failure(record: dict) -> str:
    """e.g. `critical expectation failed: expect_column_values_to_be_between(column=amount_reporting,
    max_value=1000000000) — 1 of 5000 rows unexpected (suite transactions_business)`."""
    args = ", ".join(f"{k}={_short(v)}" for k, v in record["kwargs"].items())
    call = f"{record['expectation_type']}({args})"
    if record.get("exception"):
        outcome = f"could not be evaluated: {record['exception']}"
    elif record["unexpected_count"] is not None:
        of = f" of {record['element_count']}" if record["element_count"] is not None else ""
        outcome = f"{record['unexpected_count']}{of} rows unexpected"
    else:
        outcome = f"observed {record['observed_value']!r}"
    if record.get("unexpected_rows"):
        outcome += ": " + "; ".join(record["unexpected_rows"])
    # what the run's log and error say is read by people: no card number in it (fluxo.tokenize)
    return mask_pans(f"{record['severity']} expectation failed: {call} — {outcome} (suite {record['suite']}, rule {record['rule']})")


def _column_name(kwargs: dict, meta: dict) -> str | None:
    """The column a record is about (None for a rule on the whole table)."""
    if "column" in kwargs:
        return kwargs["column"]
    if "column_A" in kwargs:
        return f"{kwargs['column_A']},{kwargs['column_B']}"
    if "column_list" in kwargs:
        return ",".join(kwargs["column_list"])
    return meta.get("column")


def _gx_suite(suite: dict):
    """A GX ExpectationSuite from a suite dict; invalid expectations raise instead of being skipped."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    expectations = []
    for e in suite["expectations"]:
        config = ExpectationConfiguration(
            type=e["type"],
            kwargs=e["kwargs"],
            meta=e["meta"],
            severity=e["meta"]["severity"],
        )
        expectations.append(config.to_domain_obj())
    meta = dict(suite.get("meta") or {})
    if isinstance(meta.get("notes"), str):  # GX's page renderer drops the page of a plain-string note that says "format"
        meta["notes"] = {"format": "markdown", "content": meta["notes"]}
    return gx.ExpectationSuite(name=suite["name"], expectations=expectations, meta=meta)


def import_gx_in_background() -> None:
    """Import Great Expectations (about 2 s of Python) on a thread while the stage's Spark work
    runs; `validate` then finds it imported, or waits for the import to finish. A failed import
    is left for `validate` to raise."""
    threading.Thread(target=_import_gx, name="import-great-expectations", daemon=True).start()


def _import_gx() -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    try:
        for module in ("great_expectations", "great_expectations.checkpoint.actions",
                       "great_expectations.data_context.types.base"):
            importlib.import_module(module)
    except Exception:  # noqa: BLE001 - validate imports it again and reports the error
        pass


def _context(data_docs_dir: str | None):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if data_docs_dir:
        # The docs index lists only results its source store holds and deletes the other
        # pages; a file store beside the site keeps earlier days' pages across runs.
        context.add_store(
            RESULTS_STORE,
            {
                "class_name": "ValidationResultsStore",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": os.path.join(os.path.dirname(data_docs_dir.rstrip("/")), RESULTS_STORE),
                },
            },
        )
        context.validation_results_store_name = RESULTS_STORE
        context.add_data_docs_site(
            site_name=DOCS_SITE,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": data_docs_dir},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return context


def _record(suite: dict, result: dict) -> dict:
    config = result["expectation_config"]
    meta = config.get("meta") or {}
    # Report the kwargs as written in the suite file (GX turns 1000000000 into 1000000000.0).
    written = next(e for e in suite["expectations"] if e["meta"]["rule"] == meta.get("rule"))
    outcome = result.get("result") or {}
    exception = result.get("exception_info") or {}
    unexpected = outcome.get("unexpected_count")
    if unexpected is None and config["type"] == "unexpected_rows_expectation":
        unexpected = outcome.get("observed_value")
    # With `unexpected_index_column_names` (the day suite), the offending rows named by those columns.
    index_columns = outcome.get("unexpected_index_column_names") or []
    rows = [", ".join(str(r.get(c)) for c in index_columns) for r in outcome.get("unexpected_index_list") or []]
    return {
        "suite": suite["name"],
        "expectation_type": config["type"],
        "column": _column_name(config["kwargs"], meta),
        "rule": meta.get("rule"),
        "severity": meta.get("severity"),
        "success": bool(result["success"]),
        "unexpected_count": unexpected,
        "element_count": outcome.get("element_count"),
        "observed_value": outcome.get("observed_value") if unexpected is None else None,
        "exception": exception.get("exception_message") if exception.get("raised_exception") else None,
        "kwargs": written["kwargs"],
        **({"unexpected_rows": rows} if rows else {}),
    }


def validate(frames, suites: list[dict], data_docs_dir: str | None = None, run_name: str | None = None) -> QualityReport:
    """Validate Spark DataFrames against suite dicts (see `load_suites`), one GX Checkpoint per DataFrame.

    `frames` maps what a suite validates (its `meta.validates`) to a DataFrame; a bare DataFrame
    is the staged transactions. With `data_docs_dir` (a local path), also builds a GX Data Docs
    site there and keeps the GX results beside it (`../gx_validation_results`) so the site lists
    every run; `run_name` labels the run in the site (e.g. `ingest_date=2026-11-20`).
    """
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier

    started = time.perf_counter()
    frames = frames if isinstance(frames, dict) else {STAGED: frames}
    context = _context(data_docs_dir)
    # persist=False: caching is the caller's (a stage's rt.persist releases it when the stage ends;
    # GX never unpersists, and a Spark Connect server keeps a frame cached after its session)
    datasource = context.data_sources.add_spark("fluxo_spark", persist=False)
    by_name = {suite["name"]: suite for suite in suites}
    groups: dict[str, list[dict]] = {}
    for suite in suites:
        groups.setdefault(_validates(suite), []).append(suite)
    # one run id for both passes: the second replaces the first's stored result and Data Docs page
    run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(timezone.utc))
    records, results = [], []
    for validates, group in groups.items():
        if validates not in frames:
            raise ValueError(f"suite {group[0]['name']!r} validates {validates!r}, which this run does not provide")
        batch_definition = datasource.add_dataframe_asset(validates).add_batch_definition_whole_dataframe("run")
        definitions = [
            context.validation_definitions.add(
                gx.ValidationDefinition(name=suite["name"], data=batch_definition, suite=context.suites.add(_gx_suite(suite)))
            )
            for suite in group
        ]
        own = next((s["meta"]["result_format"] for s in group if (s.get("meta") or {}).get("result_format")), None)
        for n, result_format in enumerate([own] if own else [COUNTS_ONLY, RESULT_FORMAT]):
            checkpoint = context.checkpoints.add(
                gx.Checkpoint(name=f"quality_gate_{validates}_{n}", validation_definitions=definitions,
                              result_format=result_format)
            )
            result = checkpoint.run(batch_parameters={"dataframe": frames[validates]}, run_id=run_id)
            found = [_record(by_name[run_result.suite_name], r.to_json_dict())
                     for run_result in result.run_results.values() for r in run_result.results]
            if not any(r["unexpected_count"] for r in found):
                break
        records.extend(found)
        results.extend(result.run_results)
    if data_docs_dir:
        # one Data Docs build for all of the run's results: a checkpoint action would rebuild the site per suite
        context.build_data_docs(site_names=[DOCS_SITE], resource_identifiers=results)
    # The row count is what every column rule on the staged rows saw; rules that query the table report none.
    staged = {s["name"] for s in groups.get(STAGED, [])}
    rows = max((r["element_count"] for r in records if r["element_count"] is not None and r["suite"] in staged),
               default=None)
    for r in records:
        if r["element_count"] is None and r["unexpected_count"] is not None and r["suite"] in staged:
            r["element_count"] = rows
    # GX returns results in its own order; keep the order of the suite files.
    position = {(s["name"], e["meta"]["rule"]): n for n, (s, e) in enumerate((s, e) for s in suites for e in s["expectations"])}
    records.sort(key=lambda r: position.get((r["suite"], r["rule"]), len(position)))
    index = os.path.join(data_docs_dir, "index.html") if data_docs_dir else None
    return QualityReport(records=records, rows=rows, seconds=time.perf_counter() - started, data_docs_index=index)


def _validates(suite: dict) -> str:
    return (suite.get("meta") or {}).get("validates", STAGED)
