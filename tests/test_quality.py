"""The quality gate: suites as data derived from the contract, GX validation on Spark, the Glue script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fluxo.contract import TRANSACTION
from fluxo.lake import Lake
from fluxo.quality import QualityGateFailed, build_contract_suite, load_suites, validate
from fluxo.quality import suites as suite_files
from fluxo.quality.day import PROFILE, PROFILE_SCHEMA, history_window, profile_rows, recent_stats_paths
from fluxo.quality.gate import RESULTS_STORE, STAGED
from fluxo.quality.sample import synthetic_transactions

REPO_ROOT = Path(__file__).resolve().parents[1]
ROWS = 200
INGEST_DATE = "2026-11-20"


# --- suites as data ---------------------------------------------------------


def test_contract_suite_file_equals_a_fresh_build():
    checked_in = (suite_files.EXPECTATIONS_DIR / "transactions_contract.json").read_text(encoding="utf-8")
    assert checked_in == suite_files.suite_text(build_contract_suite()), (
        "expectations/transactions_contract.json drifted from fluxo.contract: run `python -m fluxo.quality build-suites`"
    )


def test_contract_suite_has_a_rule_for_every_contract_property():
    rules = {e["meta"]["rule"]: e for e in build_contract_suite()["expectations"]}
    for column in TRANSACTION.columns:
        assert f"type:{column.name}" in rules
        assert (f"required:{column.name}" in rules) == column.required
        assert (f"closed_set:{column.name}" in rules) == (column.allowed is not None)
        if column.regex:
            assert rules[f"pattern:{column.name}"]["meta"]["severity"] == ("critical" if column.required else "warning")
    assert rules["unique_key"]["kwargs"] == {"column": "transaction_id"}
    assert rules["range:amount"]["kwargs"] == {"column": "amount", "min_value": 0, "strict_min": True}
    assert rules["range:amount_reporting"]["kwargs"] == {
        "column": "amount_reporting", "min_value": 0, "strict_min": True, "max_value": 1_000_000_000}
    assert rules["closed_set:country"]["kwargs"]["value_set"][:3] == ["AD", "AE", "AF"]
    assert "9999" not in rules["closed_set:mcc"]["kwargs"]["value_set"]


def test_every_expectation_keys_one_warehouse_row():
    # quality.expectation_results is keyed by (run, suite, expectation, column).
    keys = [
        (s["name"], e["type"], e["kwargs"].get("column", e["meta"].get("column")))
        for s in load_suites()
        for e in s["expectations"]
    ]
    assert len(keys) == len(set(keys))


def test_load_suites_reads_any_root_through_the_given_reader():
    # how a stage reads the suites from S3: through its own reader of `--expectations_root`
    stored = {f"s3://artifacts/expectations/{p.name}": p.read_text() for p in suite_files.EXPECTATIONS_DIR.glob("*.json")}
    suites = load_suites(root="s3://artifacts/expectations/", read_text=stored.get)
    assert [s["name"] for s in suites] == ["transactions_contract", "transactions_business", "transactions_day"]
    with pytest.raises(FileNotFoundError, match="no expectation suite 'missing'"):
        load_suites(["missing"], root="s3://artifacts/expectations/", read_text=stored.get)


def test_load_suites_rejects_an_expectation_without_severity(tmp_path):
    suite = {"name": "loose", "expectations": [{"type": "expect_column_to_exist", "kwargs": {"column": "x"}}]}
    (tmp_path / "loose.json").write_text(json.dumps(suite))
    with pytest.raises(ValueError, match="meta.severity"):
        load_suites(["loose"], root=tmp_path)


# --- validation on Spark ------------------------------------------------------


def _broken(df, **changes):
    """df with one column replaced on one row each: {column: (transaction number, SQL value)}."""
    from pyspark.sql import functions as F

    for column, (number, value) in changes.items():
        hit = F.col("transaction_id") == f"TXN-{number:010d}"
        df = df.withColumn(column, F.when(hit, F.expr(value)).otherwise(F.col(column)))
    return df


@pytest.fixture(scope="module")
def good(spark):
    return synthetic_transactions(spark, ROWS)


@pytest.fixture(scope="module")
def suites():
    return load_suites()


@pytest.fixture(scope="module")
def docs_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("quality") / "data_docs")


def frames(spark, staged, today=None, history=()):
    """What the gate validates: the staged rows and the day profile from standardize stats documents."""
    profile = profile_rows(today, list(history))
    return {STAGED: staged, PROFILE: spark.createDataFrame(profile, PROFILE_SCHEMA)}


def day_stats(**by_source) -> dict:
    """A standardize stats document with {source: (read, quarantined, {reason: n})}."""
    return {"by_source": {
        s: {"read": read, "staged": read - quarantined, "quarantined": quarantined, "quarantine_by_reason": reasons}
        for s, (read, quarantined, reasons) in by_source.items()}}


@pytest.fixture(scope="module")
def good_report(spark, good, suites, docs_dir):
    today = day_stats(s3=(ROWS, 4, {"invalid_amount": 4}))
    return validate(frames(spark, good, today), suites, data_docs_dir=docs_dir, run_name="ingest_date=2026-11-19")


@pytest.fixture(scope="module")
def broken_report(spark, good, suites):
    df = _broken(
        good,
        customer_id=(3, "CAST(NULL AS STRING)"),
        amount_reporting=(7, "CAST(987654321000 AS DECIMAL(18,2))"),
        card_last4=(11, "'12a4'"),
    )
    return validate(frames(spark, df), suites)


@pytest.fixture(scope="module")
def warnings_report(spark, good, suites):
    df = _broken(good, card_last4=(11, "'12a4'"), event_ts=(12, "ingested_at + INTERVAL 10 MINUTES"))
    return validate(frames(spark, df), suites)


@pytest.fixture(scope="module")
def day_report(spark, good):
    """A day whose rows are all fine but whose sources are not: db sent junk, kafka lost mcc, api is a tenth of its norm."""
    today = day_stats(
        s3=(1000, 20, {"invalid_amount": 20}),
        db=(400, 120, {"malformed_record": 100, "invalid_value:mcc": 20}),
        kafka=(300, 300, {"missing_required:mcc": 290, "missing_required:status": 10}),
        api=(50, 0, {}),
    )
    history = [day_stats(s3=(900, 0, {}), db=(400, 0, {}), kafka=(300, 0, {}), api=(500, 0, {})),
               day_stats(s3=(1100, 0, {}), db=(410, 0, {}), kafka=(290, 0, {}), api=(520, 0, {})),
               day_stats(s3=(1000, 0, {}), db=(390, 0, {}), kafka=(310, 0, {}), api=(480, 0, {}))]
    return validate(frames(spark, good, today, history), load_suites(["transactions_day"]))


def test_good_data_passes_every_expectation(good_report, suites):
    assert good_report.success and not good_report.critical_failures and not good_report.warnings
    assert good_report.rows == ROWS
    assert {r["suite"] for r in good_report.records} == {s["name"] for s in suites}
    assert len(good_report.records) == sum(len(s["expectations"]) for s in suites)
    good_report.raise_for_critical()


def test_day_rules_stop_the_run_naming_the_sources_and_why(day_report):
    failed = {r["rule"]: r for r in day_report.critical_failures}
    assert set(failed) == {"quarantine_rate", "column_gone_null", "volume_vs_recent_days"}
    assert [r.split(":")[0] for r in failed["quarantine_rate"]["unexpected_rows"]] == ["db", "kafka"]
    assert failed["column_gone_null"]["unexpected_rows"] == [
        "kafka: 300 of 300 records quarantined (100.0%), mostly missing_required:mcc (290); mcc missing in 96.7% of"
        " records; 300 records read against a median of 300 over the previous 3 days"]
    with pytest.raises(QualityGateFailed) as raised:
        day_report.raise_for_critical()
    message = str(raised.value)
    assert ("expect_column_values_to_be_between(column=volume_ratio, min_value=0.2, max_value=5.0) — 1 of 4 rows"
            " unexpected: api: 0 of 50 records quarantined (0.0%); 50 records read against a median of 500") in message
    assert "db: 120 of 400 records quarantined (30.0%), mostly malformed_record (100)" in message


def test_day_profile_history_window_and_norm():
    paths = [f"s3://lake/work/stats/ingest_date=2026-11-{d:02d}/standardize.json" for d in range(1, 30)]
    paths.append("s3://lake/work/stats/ingest_date=2026-11-20/curate.json")
    window, min_days = history_window(load_suites(["transactions_day"]))
    assert (window, min_days) == (7, 3)
    recent = recent_stats_paths(paths, "2026-11-20", window)
    assert [p.split("=")[1][:10] for p in recent] == [f"2026-11-{d}" for d in range(13, 20)]
    # two previous days are not a norm yet; a source seen before but silent today is a row of its own
    two = [day_stats(db=(10, 0, {}))] * 2
    assert profile_rows(day_stats(s3=(5, 1, {})), two)[0]["volume_ratio"] is None
    rows = {r["source"]: r for r in profile_rows(day_stats(s3=(5, 1, {})), two * 2)}
    assert (rows["db"]["read"], rows["db"]["volume_ratio"], rows["db"]["quarantine_rate"]) == (0, 0.0, None)
    assert rows["s3"]["quarantine_rate"] == 0.2 and rows["s3"]["volume_ratio"] is None  # s3 had 0 before: no norm
    assert profile_rows(None, []) == []


def test_data_docs_index_is_written_and_keeps_earlier_runs(good_report, good, docs_dir):
    index = Path(good_report.data_docs_index)
    assert index.is_file() and "transactions_contract" in index.read_text(encoding="utf-8")
    validate(good, load_suites(["transactions_business"]), data_docs_dir=docs_dir, run_name="ingest_date=2026-11-20")
    listed = index.read_text(encoding="utf-8")
    assert "ingest_date=2026-11-19" in listed and "ingest_date=2026-11-20" in listed


def test_a_rule_that_finds_rows_shows_examples_in_data_docs_and_each_run_is_stored_once(good, tmp_path):
    # rules are counted first without example values; a run where one finds rows runs again with
    # examples under the same run id, replacing the first pass's result and page
    docs = tmp_path / "data_docs"
    contract = load_suites(["transactions_contract"])
    validate(good, contract, data_docs_dir=str(docs), run_name="ingest_date=2026-11-19")
    odd = _broken(good, card_last4=(7, "'12x4'"))
    report = validate(odd, contract, data_docs_dir=str(docs), run_name="ingest_date=2026-11-20")
    assert {r["rule"]: r["unexpected_count"] for r in report.warnings} == {"pattern:card_last4": 1}
    pages = sorted((p.parent.parent.name, p.read_text(encoding="utf-8")) for p in (docs / "validations").rglob("*.html"))
    assert [run for run, _ in pages] == ["ingest_date=2026-11-19", "ingest_date=2026-11-20"]
    assert "12x4" in pages[1][1]
    assert len(list((tmp_path / RESULTS_STORE).rglob("*.json"))) == 2


def test_null_customer_id_is_a_critical_failure_naming_expectation_and_column(broken_report):
    failed = {(r["expectation_type"], r["column"]) for r in broken_report.critical_failures}
    assert ("expect_column_values_to_not_be_null", "customer_id") in failed
    with pytest.raises(QualityGateFailed) as raised:
        broken_report.raise_for_critical()
    assert "expect_column_values_to_not_be_null(column=customer_id) — 1 of 200 rows unexpected" in str(raised.value)


def test_absurd_amount_is_a_critical_failure_naming_it(broken_report):
    with pytest.raises(QualityGateFailed) as raised:
        broken_report.raise_for_critical()
    assert (
        "critical expectation failed: expect_column_values_to_be_between(column=amount_reporting, "
        "min_value=0, strict_min=True, max_value=1000000000) — 1 of 200 rows unexpected (suite transactions_contract"
    ) in str(raised.value)
    assert len(broken_report.critical_failures) == 2


def test_bad_card_last4_and_future_event_are_warnings_and_the_gate_passes(warnings_report):
    assert warnings_report.success
    warned = {r["rule"]: r for r in warnings_report.warnings}
    assert set(warned) == {"pattern:card_last4", "future_event_ts"}
    assert warned["pattern:card_last4"]["unexpected_count"] == 1
    assert warned["future_event_ts"]["unexpected_count"] == 1 and warned["future_event_ts"]["column"] == "event_ts"
    assert warnings_report.stats()["warnings_failed"] == 2
    warnings_report.raise_for_critical()


# --- the Glue script ----------------------------------------------------------


def _run_gate(lake_root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "glue_scripts" / "quality_gate.py"), "--JOB_NAME", "quality_gate",
         "--lake_root", str(lake_root), "--ingest_date", INGEST_DATE],
        capture_output=True, text=True, env=env, timeout=600,
    )


def assert_not_cached(spark, path: str) -> None:
    """Nothing the gate read stays cached on the stack's shared Spark server (a Spark Connect server
    keeps a frame cached after its session has gone: GX's own persist did, one day's rows a run)."""
    level = spark.read.parquet(path).storageLevel  # the same plan as the stage's, from another session
    assert not level.useMemory and not level.useDisk, f"{path} is still cached on the Spark server"


def test_script_passes_good_data_and_writes_validation_json(spark, good, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    good.write.parquet(lake.staged(INGEST_DATE))
    proc = _run_gate(tmp_path / "lake")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_not_cached(spark, lake.staged(INGEST_DATE))
    document = json.loads(Path(lake.quality(INGEST_DATE), "validation.json").read_text())
    assert document["success"] and document["rows"] == ROWS and document["critical_failed"] == 0
    assert {"suite", "expectation_type", "column", "severity", "success", "unexpected_count", "element_count"} <= set(
        document["results"][0]
    )
    stats = json.loads(Path(lake.work("stats", f"ingest_date={INGEST_DATE}", "quality_gate.json")).read_text())
    assert stats["stage"] == "quality_gate" and stats["evaluated"] == len(document["results"])
    assert Path(lake.data_docs, "index.html").is_file()


def test_script_fails_with_the_critical_expectation_named(spark, good, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    _broken(good, amount_reporting=(7, "CAST(987654321000 AS DECIMAL(18,2))")).write.parquet(lake.staged(INGEST_DATE))
    stats = Path(lake.stats(INGEST_DATE, "standardize"))
    stats.parent.mkdir(parents=True)
    stats.write_text(json.dumps(day_stats(s3=(ROWS, 0, {}), db=(10, 9, {"malformed_record": 9}))))
    proc = _run_gate(tmp_path / "lake")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("FLUXO_ERROR: ") and (
        "critical expectation failed: expect_column_values_to_be_between(column=amount_reporting, "
        "min_value=0, strict_min=True, max_value=1000000000) — 1 of 200 rows unexpected (suite transactions_contract"
    ) in last, last
    assert "db: 9 of 10 records quarantined (90.0%), mostly malformed_record (9) (suite transactions_day" in last
    # the results are recorded even when the run stops, and the stopped stage released its cache
    document = json.loads(Path(lake.quality(INGEST_DATE), "validation.json").read_text())
    assert document["critical_failed"] == 2 and not document["success"]
    assert_not_cached(spark, lake.staged(INGEST_DATE))
