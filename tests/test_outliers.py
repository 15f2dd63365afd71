"""Outliers: each detector on crafted rows, recall on the generator's planted outliers, the Glue
script's Delta MERGE rerun three times, time travel, maintenance retention, the warehouse load."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fluxo import delta_tables, history
from fluxo.contract import OUTLIER, OUTLIER_SUMMARY, TRANSACTION
from fluxo.lake import Lake
from fluxo.transforms.outliers import OutlierParams, detect, outlier_summary
from fluxo_platform.lakefs import delta_history, open_delta, read_outliers
from tests.stage_runs import run_stages

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "glue_scripts"
DETECTED_AT = datetime(2026, 11, 27, 6, 0, tzinfo=timezone.utc)
INGESTED_AT = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)


def tx(tid, amount, mcc="5411", currency="BRL", customer="C1", day=date(2026, 11, 26), minute=0, reporting=None):
    return {
        "transaction_id": tid, "source": "api",
        "event_ts": datetime.combine(day, datetime.min.time(), timezone.utc) + timedelta(minutes=minute),
        "customer_id": customer, "card_token": f"tok_{customer}", "card_last4": "1234", "merchant_id": "M1",
        "mcc": mcc, "amount": Decimal(str(amount)), "currency": currency,
        "amount_reporting": Decimal(str(reporting if reporting is not None else amount)),
        "country": "BR", "channel": "pos", "status": "approved", "batch_id": "b1", "ingested_at": INGESTED_AT,
    }


def frame(spark, rows):
    return spark.createDataFrame([tuple(r[c] for c in TRANSACTION.names) for r in rows], TRANSACTION.spark_schema())


def flagged(outliers) -> dict[tuple[str, str], dict]:
    return {(r["transaction_id"], r["method"]): r.asDict() for r in outliers.collect()}


# Log-spread amounts around 100 for one (mcc, currency); each customer gets few rows so that
# customer_history stays silent unless a test wants it.
def group_rows(prefix, n, mcc="5411", currency="BRL", center=100.0):
    return [
        tx(f"{prefix}{i}", round(center * math.exp(0.05 * (i - n // 2)), 2), mcc, currency, customer=f"{prefix}C{i % 9}", minute=i)
        for i in range(n)
    ]


def test_mad_zscore_flags_both_tails_per_mcc_and_currency(spark):
    normal = group_rows("n", 41)
    rows = normal + [tx("huge", 10_000, customer="X1"), tx("tiny", 0.50, customer="X2"),
                     # the same 10 000 is ordinary in another currency's group of large amounts
                     *group_rows("u", 41, currency="CLP", center=9_000.0), tx("clp", 10_000, currency="CLP", customer="X3")]
    df = frame(spark, rows)
    found = flagged(detect(df, df, "r1", DETECTED_AT))
    assert ("huge", "mad_zscore") in found and ("tiny", "mad_zscore") in found
    assert ("clp", "mad_zscore") not in found
    assert not [k for k in found if k[0].startswith(("n", "u"))]

    huge, tiny = found[("huge", "mad_zscore")], found[("tiny", "mad_zscore")]
    ln = sorted(math.log(float(r["amount"])) for r in normal + [tx("h", 10_000), tx("t", 0.5)])
    med = statistics.median(ln)
    mad = statistics.median(abs(v - med) for v in ln)
    assert huge["baseline"] == pytest.approx(math.exp(med), rel=1e-3)
    assert huge["scale"] == pytest.approx(mad, rel=1e-3)
    assert huge["score"] == pytest.approx(0.6745 * (math.log(10_000) - med) / mad, rel=1e-3)
    assert tiny["score"] < -3.5 < 3.5 < huge["score"]
    assert huge["threshold"] == 3.5 and huge["run_id"] == "r1" and huge["detected_at"] == DETECTED_AT.replace(tzinfo=None)  # Spark returns naive UTC
    assert huge["event_date"] == date(2026, 11, 26) and huge["mcc"] == "5411" and huge["currency"] == "BRL"


def test_group_methods_need_a_minimum_group_size(spark):
    rows = group_rows("s", 20, mcc="5944") + [tx("big", 100_000, mcc="5944", customer="X1")]
    df = frame(spark, rows)
    assert flagged(detect(df, df, "r1", DETECTED_AT)) == {}
    found = flagged(detect(df, df, "r1", DETECTED_AT, OutlierParams(min_group_size=10)))
    assert {k[1] for k in found if k[0] == "big"} == {"mad_zscore", "iqr_fence"}


def test_iqr_fence_uses_k_times_iqr_beyond_the_quartiles(spark):
    normal = group_rows("n", 41)
    ln = sorted(math.log(float(r["amount"])) for r in normal)
    # quartile ranks of the 43 rows (the two test rows sort above Q3)
    q1, q3 = ln[10], ln[32]
    iqr = q3 - q1
    inside = round(math.exp(q3 + 2.5 * iqr), 2)  # beyond Q3 but inside the k=3 fence
    outside = round(math.exp(q3 + 3.5 * iqr), 2)
    rows = normal + [tx("inside", inside, customer="X1"), tx("outside", outside, customer="X2")]
    df = frame(spark, rows)
    # a MAD cut-off this high keeps the MAD detector out of the way
    found = flagged(detect(df, df, "r1", DETECTED_AT, OutlierParams(mad_threshold=1e9)))
    assert set(found) == {("outside", "iqr_fence")}
    row = found[("outside", "iqr_fence")]
    assert row["threshold"] == 3.0
    assert row["score"] == pytest.approx(3.5, abs=0.3)
    assert row["scale"] == pytest.approx(iqr, rel=0.15)


def test_customer_history_compares_with_the_customers_own_median(spark):
    regular = [tx(f"h{i}", 40 + i, mcc=f"{5000 + i}", customer="C1", minute=i) for i in range(12)]
    newcomer = [tx(f"k{i}", 40 + i, mcc=f"{6000 + i}", customer="C2", minute=i) for i in range(5)]
    rows = regular + newcomer + [
        tx("spree", 4_600, mcc="5999", customer="C1"),       # 100x the customer's median
        tx("mild", 400, mcc="5998", customer="C1"),          # 9x: a normal splurge
        tx("first_big", 9_000, mcc="5997", customer="C2"),   # too little history to judge
    ]
    df = frame(spark, rows)
    found = flagged(detect(df, df, "r1", DETECTED_AT))
    assert set(found) == {("spree", "customer_history")}
    row = found[("spree", "customer_history")]
    assert row["baseline"] == pytest.approx(46.0, abs=1.01)  # median of 13..14 amounts around 46
    assert row["score"] == pytest.approx(4_600 / row["baseline"], rel=1e-4)
    assert row["scale"] == 14.0 and row["threshold"] == 50.0


def test_recall_and_false_positives_on_generator_data(spark, tmp_path):
    from pyspark.sql import functions as F

    from fluxo_dev.generator import generate

    generate(tmp_path, date(2026, 11, 1), days=1, rows_per_day=30_000, seed=11, sources=("s3",), token_salt="t")
    truth = spark.read.parquet(str(tmp_path / "truth"))
    lineage = {"source": F.lit("s3"), "batch_id": F.lit("b1"), "ingested_at": F.lit(INGESTED_AT)}
    curated = truth.select(*[lineage.get(c, F.col(c)).alias(c) for c in TRANSACTION.names])
    outliers = detect(curated, curated, "r1", DETECTED_AT)
    hits = outliers.select("transaction_id").distinct()
    labelled = truth.join(hits.withColumn("hit", F.lit(True)), "transaction_id", "left").fillna({"hit": False})
    counts = {(r["is_outlier"], r["normal"], r["hit"]): r["count"] for r in labelled.groupBy(
        "is_outlier", F.col("fraud_pattern").isNull().alias("normal"), "hit").count().collect()}
    planted = counts.get((True, True, True), 0) + counts.get((True, True, False), 0)
    planted += counts.get((True, False, True), 0) + counts.get((True, False, False), 0)
    recalled = counts.get((True, True, True), 0) + counts.get((True, False, True), 0)
    normal_rows = counts.get((False, True, True), 0) + counts.get((False, True, False), 0)
    false_positives = counts.get((False, True, True), 0)
    assert planted >= 5
    assert recalled / planted >= 0.9, counts  # "most": a planted row in a tiny (mcc, currency) group may escape
    assert false_positives / normal_rows < 0.005, counts


# --- the Glue script, the Delta history and the warehouse load ------------------------------

DAY1, DAY2 = "2026-11-26", "2026-11-27"


def write_day(spark, root: Path, rows: list[dict], day: str) -> None:
    """The day's rows in the curated Delta table (as curate would leave them)."""
    from fluxo.transforms.curate import merge_staged

    staged = spark.createDataFrame(pa.Table.from_pylist(rows, schema=TRANSACTION.arrow_schema()).to_pandas(),
                                   TRANSACTION.spark_schema())
    merge_staged(spark, Lake(str(root)).curated_transactions, staged, [day], {"stage": "test", "ingest_date": day})


def day_rows(day: date, prefix: str) -> list[dict]:
    rows = [tx(f"{prefix}{i}", round(80 * math.exp(0.04 * ((i * 7) % 41 - 20)), 2), customer=f"C{i % 4}", day=day, minute=i)
            for i in range(60)]
    return rows + [tx(f"{prefix}-big", 30_000, customer="C1", day=day, minute=61),
                   tx(f"{prefix}-small", 0.40, customer="C2", day=day, minute=62)]


def run_scripts(root: Path, *argvs: list[str]) -> subprocess.CompletedProcess:
    return run_stages(*argvs, cwd=root)


def outliers_argv(root: Path, day: str, run_id: str) -> list[str]:
    return [str(SCRIPTS / "outliers.py"), "--JOB_NAME", "outliers", "--lake_root", str(root), "--ingest_date", day,
            "--history_days", "3", "--run_id", run_id, "--event_dates", day]


def snapshot(uri: str, **when) -> list[tuple]:
    return sorted(tuple(str(v) for v in row.values()) for row in read_outliers(uri, **when).to_pylist())


def stats_of(root: Path, day: str, stage: str) -> dict:
    return json.loads((root / "work" / "stats" / f"ingest_date={day}" / f"{stage}.json").read_text())


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("outlier-lake")
    uri = Lake(str(root)).outlier_history
    write_day(spark, root, day_rows(date(2026, 11, 26), "a"), DAY1)
    run_scripts(root, outliers_argv(root, DAY1, "run-1"))
    first = {"rows": snapshot(uri), "history": delta_history(uri), "stats": stats_of(root, DAY1, "outliers")}
    run_scripts(root, outliers_argv(root, DAY1, "run-2"), outliers_argv(root, DAY1, "run-3"))
    rerun = {"rows": snapshot(uri), "history": delta_history(uri), "stats": stats_of(root, DAY1, "outliers")}
    time.sleep(1.1)  # commit timestamps have millisecond resolution; keep the two runs apart
    write_day(spark, root, day_rows(date(2026, 11, 27), "b"), DAY2)
    maintenance = [str(SCRIPTS / "lake_maintenance.py"), "--JOB_NAME", "lake_maintenance",
                   "--lake_root", str(root), "--dry_run", "true", "--ingest_date", DAY2]
    run_scripts(root, outliers_argv(root, DAY2, "run-4"), maintenance)
    return {"root": root, "uri": uri, "first": first, "rerun": rerun}


def test_script_writes_the_days_outliers_to_delta(runs):
    first = runs["first"]
    keys = {(r[0], r[9]) for r in first["rows"]}  # transaction_id, method
    assert ("a-big", "mad_zscore") in keys and ("a-small", "mad_zscore") in keys
    assert not [k for k in keys if k[0] not in ("a-big", "a-small")]
    assert first["stats"]["dates"] == [DAY1] and first["stats"]["flagged_rows"] == len(first["rows"])
    assert first["stats"]["inserted"] == len(first["rows"])
    methods = [k[1] for k in keys]
    assert first["stats"]["by_method"] == {m: methods.count(m) for m in ("mad_zscore", "iqr_fence", "customer_history")}
    assert first["stats"]["flagged_transactions"] == len({k[0] for k in keys})
    assert set(first["stats"]["seconds"]) == {"detect", "delta_merge", "summary"}
    table = open_delta(runs["uri"])
    assert table.metadata().partition_columns == ["event_date"]
    assert json.loads(first["history"][0]["user_metadata"])["run_id"] == "run-1"  # lineage of the commit
    assert {r["run_id"] for r in read_outliers(runs["uri"], version=first["history"][0]["version"]).to_pylist()} == {"run-1"}


def test_reruns_add_nothing_to_the_delta_table(runs):
    first, rerun = runs["first"], runs["rerun"]
    assert rerun["rows"] == first["rows"]
    # the MERGE matched every row and changed none
    assert rerun["stats"]["inserted"] == rerun["stats"]["updated"] == rerun["stats"]["deleted"] == 0
    inserted = sum(int(h["metrics"].get("numTargetRowsInserted", 0)) for h in rerun["history"])
    assert inserted == len(first["rows"])


def test_time_travel_returns_the_earlier_version(runs):
    uri, first = runs["uri"], runs["first"]
    latest = delta_history(uri)
    assert latest[0]["version"] > first["history"][0]["version"]
    now = snapshot(uri)
    assert len(now) > len(first["rows"]) and {r[0] for r in now} >= {"b-big", "b-small"}
    v1 = first["history"][0]
    assert snapshot(uri, version=v1["version"]) == first["rows"]
    assert snapshot(uri, as_of=v1["timestamp"] + timedelta(milliseconds=500)) == first["rows"]
    assert snapshot(uri, event_dates=[DAY1]) == first["rows"]


def test_summary_parquet_counts_per_method_and_mcc(runs):
    root = runs["root"]
    summary = pq.read_table(Lake(str(root)).metrics("outlier_summary", DAY2)).to_pylist()
    methods = {r["method"]: r for r in summary}
    assert all(r["event_date"] == date(2026, 11, 27) and r["mcc"] == "5411" for r in summary)
    assert methods["mad_zscore"]["outlier_count"] == 2
    assert methods["mad_zscore"]["max_score"] > 3.5
    assert methods["mad_zscore"]["amount_reporting_total"] == Decimal("30000.40")


def test_maintenance_script_dry_run_deletes_nothing(runs):
    stats = stats_of(runs["root"], DAY2, "lake_maintenance")
    assert stats["dry_run"] is True and stats["retention_hours"] == 168
    assert set(stats["tables"]) == {"curated_transactions", "outlier_history", "fraud_alerts"}
    assert stats["tables"]["fraud_alerts"]["table_exists"] is False  # no fraud stage ran on this lake
    for table in (t for t in stats["tables"].values() if t.get("table_exists", True)):
        assert table["version_after"] == table["version_before"] and table["files_removed"] == 0


def _flagged(spark, rows: list[dict]):
    return spark.createDataFrame(pa.Table.from_pylist(rows, schema=OUTLIER.arrow_schema()).to_pandas(), OUTLIER.spark_schema())


def _merge(spark, uri, rows, dates):
    return history.merge_flagged(spark, uri, _flagged(spark, rows), dates, {"stage": "test"})


def test_maintain_compacts_and_respects_retention(spark, tmp_path):
    uri = str(tmp_path / "outliers")

    def rows(score: float, ids: range) -> list[dict]:
        return [{
            "transaction_id": f"t{i}", "event_ts": datetime(2026, 11, 26, 10, tzinfo=timezone.utc),
            "event_date": date(2026, 11, 26), "customer_id": "C1", "merchant_id": "M1", "mcc": "5411",
            "currency": "BRL", "amount": Decimal("9000.00"), "amount_reporting": Decimal("9000.00"),
            "method": "mad_zscore", "score": score, "threshold": 3.5, "baseline": 90.0, "scale": 0.4,
            "detected_at": DETECTED_AT, "run_id": f"r{score}",
        } for i in ids]

    for i in range(4):  # four small files
        _merge(spark, uri, rows(5.0, range(i * 3, i * 3 + 3)), [])
    before = read_outliers(uri)
    first_version = min(h["version"] for h in delta_history(uri) if h["operation"] == "MERGE")
    files_before = len(open_delta(uri).file_uris())

    kept = delta_tables.maintain(spark, uri, retention_hours=168)
    assert kept["files_removed"] == files_before and kept["files_added"] == 1
    assert kept["vacuumed_files"] == 0  # the compacted files left the table just now
    assert read_outliers(uri) == before
    assert read_outliers(uri, version=first_version).num_rows == 3  # still travels

    dry = delta_tables.maintain(spark, uri, retention_hours=0, dry_run=True)
    assert dry["vacuumed_files"] == files_before and dry["version_after"] == dry["version_before"]
    assert read_outliers(uri, version=first_version).num_rows == 3

    purged = delta_tables.maintain(spark, uri, retention_hours=0)
    assert purged["vacuumed_files"] == files_before
    assert read_outliers(uri) == before
    with pytest.raises(Exception):
        read_outliers(uri, version=first_version)
    with pytest.raises(ValueError):
        delta_tables.maintain(spark, uri, retention_hours=-1)


def test_merge_updates_changed_scores_and_drops_rows_no_longer_flagged(spark, tmp_path):
    uri = str(tmp_path / "outliers")
    base = {
        "event_ts": datetime(2026, 11, 26, 10, tzinfo=timezone.utc), "event_date": date(2026, 11, 26),
        "customer_id": "C1", "merchant_id": "M1", "mcc": "5411", "currency": "BRL",
        "amount": Decimal("9000.00"), "amount_reporting": Decimal("9000.00"), "threshold": 3.5,
        "baseline": 90.0, "scale": 0.4, "detected_at": DETECTED_AT,
    }
    _merge(spark, uri, [
        {**base, "transaction_id": "t1", "method": "mad_zscore", "score": 5.0, "run_id": "r1"},
        {**base, "transaction_id": "t1", "method": "iqr_fence", "score": 4.0, "run_id": "r1"},
        {**base, "transaction_id": "t2", "method": "mad_zscore", "score": 6.0, "run_id": "r1"},
    ], ["2026-11-26"])
    later = DETECTED_AT + timedelta(days=1)
    result = _merge(spark, uri, [
        {**base, "transaction_id": "t1", "method": "mad_zscore", "score": 5.0, "run_id": "r2", "detected_at": later},
        {**base, "transaction_id": "t1", "method": "iqr_fence", "score": 4.5, "run_id": "r2", "detected_at": later},
    ], ["2026-11-26"])
    assert (result["inserted"], result["updated"], result["deleted"]) == (0, 1, 1)
    rows = {(r["transaction_id"], r["method"]): r for r in read_outliers(uri).to_pylist()}
    assert set(rows) == {("t1", "mad_zscore"), ("t1", "iqr_fence")}
    assert rows[("t1", "mad_zscore")]["run_id"] == "r1"  # unchanged score: first detection kept
    assert rows[("t1", "iqr_fence")]["run_id"] == "r2" and rows[("t1", "iqr_fence")]["score"] == 4.5

    # a recomputed day without outliers empties that day only
    other_day = {**base, "event_date": date(2026, 11, 25), "transaction_id": "t0", "method": "mad_zscore",
                 "score": 7.0, "run_id": "r0"}
    _merge(spark, uri, [other_day], [])
    emptied = _merge(spark, uri, [], ["2026-11-26"])
    assert emptied["deleted"] == 2
    assert [r["transaction_id"] for r in read_outliers(uri).to_pylist()] == ["t0"]


def test_outlier_summary_of_crafted_findings(spark):
    rows = group_rows("n", 41) + [tx("huge", 10_000, customer="X1"), tx("huge2", 20_000, customer="X2")]
    df = frame(spark, rows)
    summary = [r.asDict() for r in outlier_summary(detect(df, df, "r1", DETECTED_AT)).collect()]
    by_method = {r["method"]: r for r in summary}
    assert set(by_method) == {"mad_zscore", "iqr_fence"}
    assert by_method["mad_zscore"]["outlier_count"] == 2
    assert by_method["mad_zscore"]["amount_reporting_total"] == Decimal("30000.00")


def test_load_outlier_summary_is_idempotent(runs, warehouse_url, monkeypatch):
    from fluxo_platform.settings import get_settings

    sys.path.insert(0, str(REPO / "plugins"))
    from fluxo_tasks.outliers import load_outlier_summary

    monkeypatch.setenv("FLUXO_LAKE_ROOT", str(runs["root"]))
    get_settings.cache_clear()
    try:
        def table():
            with psycopg.connect(warehouse_url) as conn:
                return conn.execute(
                    "SELECT event_date, method, mcc, outlier_count, max_score, amount_reporting_total, run_id"
                    " FROM metrics.outlier_summary WHERE event_date IN ('2026-11-26', '2026-11-27') ORDER BY 1, 2, 3"
                ).fetchall()

        first = load_outlier_summary(DAY2, "run-4")
        loaded = table()
        assert first["summary_rows"] == len(loaded) > 0
        for _ in range(2):
            again = load_outlier_summary(DAY2, "run-4")
            assert again["replaced"] == len(loaded)
            assert table() == loaded
        expected = pq.read_table(Lake(str(runs["root"])).metrics("outlier_summary", DAY2)).to_pylist()
        assert [(r[1], r[2], r[3]) for r in loaded] == sorted((e["method"], e["mcc"], e["outlier_count"]) for e in expected)
        with psycopg.connect(warehouse_url) as conn:
            mart = conn.execute("SELECT count(*) FROM mart.outlier_summary WHERE event_date = '2026-11-27'").fetchone()[0]
        assert mart == len(loaded)
    finally:
        get_settings.cache_clear()


def test_s3_storage_options_come_from_settings(monkeypatch):
    from fluxo_platform.lakefs import storage_options
    from fluxo_platform.settings import get_settings

    monkeypatch.setenv("FLUXO_S3_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("FLUXO_S3_ACCESS_KEY", "dev-only-key")
    monkeypatch.setenv("FLUXO_S3_SECRET_KEY", "dev-only-secret")
    get_settings.cache_clear()
    try:
        options = storage_options("s3a://lake/history/outliers")
    finally:
        get_settings.cache_clear()
    assert options["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9" and options["AWS_ALLOW_HTTP"] == "true"
    assert options["AWS_ACCESS_KEY_ID"] == "dev-only-key"
    assert storage_options("/local/lake/history/outliers") is None


def test_warehouse_summary_table_matches_the_contract(warehouse_url):
    with psycopg.connect(warehouse_url) as conn:
        columns = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'metrics' AND table_name = 'outlier_summary'"
        ).fetchall())
        key = [r[0] for r in conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = 'metrics.outlier_summary'::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)"
        ).fetchall()]
    for name, sql_type in OUTLIER_SUMMARY.sql_types().items():
        assert columns.get(name) == sql_type, name
    assert tuple(key) == OUTLIER_SUMMARY.key
