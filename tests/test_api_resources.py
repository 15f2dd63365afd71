"""The resources besides the metrics: a curated transaction (from the Delta table, local or S3),
quality results, pipeline runs (new columns appear by themselves), the Delta outlier history as of
a version or time; and the audit holding every request of the session."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import httpx
import psycopg
import pyarrow as pa
import pytest

from fluxo.contract import FRAUD_ALERT, OUTLIER, TRANSACTION
from fluxo.history import merge_flagged
from fluxo_platform.lakefs import delta_history
from fluxo.lake import Lake
from fluxo_platform.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "api"))  # the API's own modules, as uvicorn --app-dir api sees them

DAY = date(1999, 3, 1)
WINDOW = {"from": "1999-03-01", "to": "1999-03-02"}


@pytest.fixture(scope="module")
def bearer(api) -> dict[str, str]:
    return api.bearer("resources", "metrics:read", "transactions:read", "quality:read", "runs:read", "outliers:read")


def _transaction(i: int, day: date = DAY) -> dict:
    ts = datetime(day.year, day.month, day.day, 10, i, tzinfo=timezone.utc)
    return {"transaction_id": f"tx-{i:04d}", "source": "api", "event_ts": ts, "customer_id": f"c{i}",
            "card_token": f"tok_{i:032d}", "card_last4": f"{4000 + i}", "merchant_id": "m001", "mcc": "5411",
            "amount": Decimal(f"{10 + i}.25"), "currency": "BRL", "amount_reporting": Decimal(f"{10 + i}.25"),
            "country": "BR", "channel": "pos", "status": "approved", "batch_id": "b1", "ingested_at": ts}


def _write_curated(root: str, rows: list[dict]) -> None:
    """The curated Delta table as curate leaves it (partitioned by event_date), written by delta-rs."""
    from deltalake import write_deltalake

    from fluxo_platform.lakefs import delta_uri, storage_options

    uri = Lake(root).curated_transactions
    table = pa.Table.from_pylist(rows, schema=TRANSACTION.arrow_schema())
    table = table.append_column("event_date", pa.array([r["event_ts"].date() for r in rows], pa.date32()))
    write_deltalake(delta_uri(uri), table, partition_by=["event_date"], mode="overwrite",
                    storage_options=storage_options(uri))


# --- transactions ----------------------------------------------------------------------------


def test_a_transaction_is_served_with_the_card_masked(api, bearer):
    rows = [_transaction(i) for i in range(3)] + [_transaction(7, DAY + timedelta(days=1))]
    _write_curated(api.lake_root, rows)
    response = httpx.get(f"{api.base_url}/transactions/tx-0001", headers=bearer)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["transaction_id"] == "tx-0001" and body["event_date"] == "1999-03-01"
    assert body["card_masked"] == "************4001" and "card_token" not in body and "card_last4" not in body
    assert "tok_" not in response.text and body["amount"] == "11.25"
    hinted = httpx.get(f"{api.base_url}/transactions/tx-0007", params={"date": "1999-03-02"}, headers=bearer)
    assert hinted.status_code == 200 and hinted.json()["event_date"] == "1999-03-02"
    wrong_day = httpx.get(f"{api.base_url}/transactions/tx-0007", params={"date": "1999-03-01"}, headers=bearer)
    assert wrong_day.status_code == 404 and wrong_day.json()["error"] == "not_found"
    assert httpx.get(f"{api.base_url}/transactions/nope", headers=bearer).status_code == 404
    assert httpx.get(f"{api.base_url}/transactions/a%00b", headers=bearer).status_code == 422


def test_the_reader_opens_delta_and_s3_lakes(stack_env, tmp_path, monkeypatch):
    """The same reader on a local Delta table and on one in S3."""
    import boto3
    from app.core.curated import find_transaction
    from fluxo_platform.settings import get_settings

    rows = [_transaction(i) for i in range(3)]
    delta_root = str(tmp_path / "lake")
    _write_curated(delta_root, rows)
    found = find_transaction(delta_root, "tx-0002", DAY)
    assert found["card_last4"] == "4002" and found["event_date"] == DAY
    assert find_transaction(delta_root, "tx-0002") == found
    assert find_transaction(delta_root, "tx-0002", DAY + timedelta(days=3)) is None

    bucket = f"api-lake-{uuid.uuid4().hex[:6]}"
    boto3.client("s3", endpoint_url=stack_env["FLUXO_S3_ENDPOINT"], region_name="us-east-1",
                 aws_access_key_id=stack_env["FLUXO_S3_ACCESS_KEY"],
                 aws_secret_access_key=stack_env["FLUXO_S3_SECRET_KEY"]).create_bucket(Bucket=bucket)
    get_settings.cache_clear()
    s3_root = f"s3://{bucket}/lake"
    _write_curated(s3_root, rows)
    assert find_transaction(s3_root, "tx-0001", DAY)["customer_id"] == "c1"
    assert find_transaction(s3_root, "tx-0009") is None


# --- quality and pipeline runs --------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(warehouse_url):
    prefix = f"test-api-{uuid.uuid4().hex[:6]}"
    run_ids = [f"{prefix}-{i}" for i in range(3)]
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        for i, run_id in enumerate(run_ids):
            counts = {"quarantined": 5 + i, "duplicates_dropped": 2 * i, "read": 100}
            conn.execute("INSERT INTO audit.pipeline_runs (run_id, dag_id, ingest_date, state, counts)"
                         " VALUES (%s, 'transactions_etl', %s, %s, %s)",
                         (run_id, DAY + timedelta(days=i % 2), "success" if i else "failed", json.dumps(counts)))
            for expectation, success in (("expect_column_values_to_not_be_null", True),
                                         ("expect_column_values_to_be_between", i != 1)):
                conn.execute("INSERT INTO quality.expectation_results (run_id, ingest_date, suite, expectation,"
                             " column_name, severity, success, unexpected_count, element_count)"
                             " VALUES (%s, %s, 'transactions', %s, 'amount', 'critical', %s, %s, 100)",
                             (run_id, DAY + timedelta(days=i % 2), expectation, success, 0 if success else 3))
    yield run_ids
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        conn.execute("DELETE FROM quality.expectation_results WHERE run_id = ANY(%s)", (run_ids,))
        conn.execute("DELETE FROM audit.pipeline_runs WHERE run_id = ANY(%s)", (run_ids,))


def test_pipeline_runs_are_listed_whole_and_one_by_one(api, bearer, runs):
    response = httpx.get(f"{api.base_url}/runs", params=WINDOW, headers=bearer)
    assert response.status_code == 200, response.text
    listed = [r for r in response.json() if r["run_id"] in runs]
    assert [r["run_id"] for r in listed] == [runs[0], runs[2], runs[1]]  # by ingest date, then run id
    assert listed[0]["counts"]["quarantined"] == 5 and {"state", "dag_id", "finished_at"} <= set(listed[0])
    failed = httpx.get(f"{api.base_url}/runs", params={**WINDOW, "state": "failed"}, headers=bearer).json()
    assert runs[0] in [r["run_id"] for r in failed] and runs[1] not in [r["run_id"] for r in failed]
    one = httpx.get(f"{api.base_url}/runs/{runs[1]}", headers=bearer)
    assert one.status_code == 200 and one.json()["counts"]["duplicates_dropped"] == 2
    assert httpx.get(f"{api.base_url}/runs/no-such-run", headers=bearer).status_code == 404


def test_a_column_added_to_pipeline_runs_appears_without_code_changes(api, bearer, runs, warehouse_url):
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE audit.pipeline_runs ADD COLUMN IF NOT EXISTS test_api_note text")
        conn.execute("UPDATE audit.pipeline_runs SET test_api_note = 'hello' WHERE run_id = %s", (runs[0],))
    try:
        body = httpx.get(f"{api.base_url}/runs/{runs[0]}", headers=bearer).json()
        assert body["test_api_note"] == "hello"
        as_csv = httpx.get(f"{api.base_url}/runs", params={**WINDOW, "format": "csv"}, headers=bearer)
        header = next(csv.reader(io.StringIO(as_csv.text)))
        assert "test_api_note" in header and "counts" in header
    finally:
        with psycopg.connect(warehouse_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE audit.pipeline_runs DROP COLUMN test_api_note")


def test_quality_results_per_run(api, bearer, runs):
    response = httpx.get(f"{api.base_url}/quality/results", params={**WINDOW, "run_id": runs[1]}, headers=bearer)
    assert response.status_code == 200, response.text
    assert [(r["expectation"], r["success"]) for r in response.json()] == [
        ("expect_column_values_to_be_between", False), ("expect_column_values_to_not_be_null", True)]
    failures = httpx.get(f"{api.base_url}/quality/results", params={**WINDOW, "success": "false"},
                         headers=bearer).json()
    assert runs[1] in {r["run_id"] for r in failures} and all(not r["success"] for r in failures)
    paged = httpx.get(f"{api.base_url}/quality/results", params={**WINDOW, "limit": 1}, headers=bearer)
    assert paged.headers["link"].startswith(f"<{api.base_url}/quality/results?")


def test_each_resource_needs_its_scope(api):
    headers = api.bearer("metrics-only", "metrics:read")
    for path, params in (("/runs", WINDOW), ("/quality/results", WINDOW), ("/transactions/tx-0001", {}),
                         ("/outliers/history", WINDOW), ("/runs/x", {})):
        response = httpx.get(api.base_url + path, params=params, headers=headers)
        assert response.status_code == 403, path


# --- outlier history (Delta) -------------------------------------------------------------------


def _outlier(i: int, score: float, run_id: str) -> dict:
    ts = datetime(1999, 3, 1, 12, i, tzinfo=timezone.utc)
    return {"transaction_id": f"tx-{i:04d}", "event_ts": ts, "event_date": ts.date(), "customer_id": f"c{i}",
            "merchant_id": "m001", "mcc": "5411", "currency": "BRL", "amount": Decimal("9999.00"),
            "amount_reporting": Decimal("9999.00"), "method": "mad_zscore", "score": score, "threshold": 3.5,
            "baseline": 50.0, "scale": 1.2, "detected_at": ts, "run_id": run_id}


def _merge(spark, uri: str, rows: list[dict]) -> None:
    frame = spark.createDataFrame(pa.Table.from_pylist(rows, schema=OUTLIER.arrow_schema()).to_pandas(),
                                  OUTLIER.spark_schema())
    merge_flagged(spark, uri, frame, ["1999-03-01"], {"stage": "test"})


def test_outlier_history_now_and_as_of_a_version_or_time(api, bearer, spark):
    uri = Lake(api.lake_root).outlier_history
    _merge(spark, uri, [_outlier(1, 5.0, "r1"), _outlier(2, 6.0, "r1")])
    first = delta_history(uri)[0]
    time.sleep(1.1)
    _merge(spark, uri, [_outlier(1, 7.5, "r2")])
    now = httpx.get(f"{api.base_url}/outliers/history", params=WINDOW, headers=bearer)
    assert now.status_code == 200, now.text
    assert [(r["transaction_id"], r["score"]) for r in now.json()] == [("tx-0001", 7.5)]
    assert now.json()[0]["amount"] == "9999.00"
    then = httpx.get(f"{api.base_url}/outliers/history",
                     params={**WINDOW, "version": first["version"], "transaction_id": "tx-0001"}, headers=bearer)
    assert [(r["transaction_id"], r["score"], r["run_id"]) for r in then.json()] == [("tx-0001", 5.0, "r1")]
    as_of = (first["timestamp"] + timedelta(milliseconds=500)).isoformat()
    at_time = httpx.get(f"{api.base_url}/outliers/history", params={**WINDOW, "as_of": as_of}, headers=bearer)
    assert [r["transaction_id"] for r in at_time.json()] == ["tx-0001", "tx-0002"]
    as_csv = httpx.get(f"{api.base_url}/outliers/history", params={**WINDOW, "format": "csv"}, headers=bearer)
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [(r["transaction_id"], float(r["score"])) for r in table] == [("tx-0001", 7.5)]
    versions = httpx.get(f"{api.base_url}/outliers/history/versions", headers=bearer).json()
    assert [v["version"] for v in versions][:2] == [first["version"] + 1, first["version"]]
    too_far = httpx.get(f"{api.base_url}/outliers/history", params={**WINDOW, "version": 999}, headers=bearer)
    assert too_far.status_code == 422 and too_far.json()["errors"][0]["field"] == "version"
    both = httpx.get(f"{api.base_url}/outliers/history", params={**WINDOW, "version": 0, "as_of": as_of},
                     headers=bearer)
    assert both.status_code == 422


# --- the audit holds every request -----------------------------------------------------------


def test_a_concurrent_burst_is_audited_row_for_row(api, bearer):
    """200 requests from 50 connections at once, of every kind, then one audit row for each."""
    paths = ["/metrics/daily?from=1999-03-01&to=1999-03-02", "/metrics/daily?from=x", "/health%00",
             "/runs?from=1999-03-01&to=1999-03-02", "/no-such-route", "/metrics/merchants?from=1999-03-01&to=1999-03-02&merchant_id=%00"]

    async def burst() -> list[str]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=api.base_url, limits=limits, timeout=60) as http:
            ids = [f"burst-{uuid.uuid4().hex}" for _ in range(200)]
            answers = await asyncio.gather(*[
                http.get(paths[i % len(paths)], headers={**bearer, "X-Request-ID": rid}) for i, rid in enumerate(ids)])
            assert all(a.status_code < 500 for a in answers)
            return ids

    ids = asyncio.run(burst())
    found = api.audit_rows(ids, timeout=20)
    assert len(found) == len(ids)


def test_every_request_of_the_session_so_far_is_in_the_audit(api):
    """Each request the shared server logged (one JSON line each) has its audit row."""
    logged = [json.loads(line) for line in api.log_lines() if line.startswith("{") and '"api access"' in line]
    audited_paths = {"/healthz", "/readyz", "/health", "/ops/metrics"}
    expected = {e["request_id"] for e in logged if not (e["path"] in audited_paths and e["status_code"] < 500)}
    assert len(expected) > 100
    found = api.audit_rows(sorted(expected), timeout=20)
    assert sorted(expected - set(found)) == []


def test_the_audit_writer_waits_when_full_retries_and_drops_nothing():
    """In process, with a warehouse that refuses the first batches: a full queue makes `put` wait
    (back-pressure), refused batches are retried, every row arrives once."""
    from contextlib import asynccontextmanager
    from types import SimpleNamespace

    from app.core.audit import AccessEntry, AuditWriter

    stored: list[tuple] = []
    failures = {"left": 2}

    class Copy:
        async def write(self, data: bytes):
            stored.extend(tuple(line.split("\t")) for line in data.decode().splitlines())

    class Cursor:
        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return False

        @asynccontextmanager
        async def copy(self, statement):
            yield Copy()

    class Pool:
        @asynccontextmanager
        async def connection(self, timeout=None):
            if failures["left"]:
                failures["left"] -= 1
                raise OSError("warehouse down")
            yield SimpleNamespace(cursor=Cursor)

    settings = SimpleNamespace(audit_queue_size=3, audit_batch_size=4, audit_flush_seconds=0.01,
                               pool_timeout_seconds=1, audit_spill_dir=None, access_log=False)

    def entry(i: int) -> AccessEntry:
        return AccessEntry(at=datetime.now(timezone.utc), request_id=f"r{i}", principal=None, method="GET",
                           path="/x\x00", query=None, status_code=200, client_ip=None, duration_ms=1.0, detail={})

    async def run() -> list[float]:
        writer = AuditWriter(settings, Pool())
        writer.start()
        waits = []
        for i in range(20):
            started = time.monotonic()
            await writer.put(entry(i))
            waits.append(time.monotonic() - started)
            assert writer.queue.qsize() <= settings.audit_queue_size
        await writer.close()
        return waits

    waits = asyncio.run(run())
    assert [row[1] for row in stored] == [f"r{i}" for i in range(20)]
    assert {row[4] for row in stored} == {"/x" + "\\" * 2 + "x00"}  # COPY text of the escaped NUL
    assert max(waits) >= 0.4  # a put waited while the writer backed off from the refusals


# --- fraud alerts (warehouse) --------------------------------------------------------------------


def _alert(i: int, rules: str, score: float) -> dict:
    row = {c.name: None for c in FRAUD_ALERT.columns}
    ts = datetime(DAY.year, DAY.month, DAY.day, 3, i, tzinfo=timezone.utc)
    row.update(_transaction(i))
    row.update(event_date=DAY, event_ts=ts, rules=rules, rule_count=len(rules.split(",")), score=score,
               severity="critical" if "impossible_travel" in rules else "warning", txns_10min=1, txns_1h=1,
               merchants_10min=1, merchants_1h=1, detected_at=ts, run_id="test-api-fraud",
               night_high_risk_amount=Decimal("2500.00") if "night" in rules else None,
               travel_time_ratio=0.4 if "impossible_travel" in rules else None)
    return {c: row[c] for c in FRAUD_ALERT.names}


@pytest.fixture(scope="module")
def fraud_alerts(warehouse_url):
    from fluxo_platform.warehouse import replace_days

    rows = [_alert(1, "night_high_risk_mcc", 0.5), _alert(2, "impossible_travel,night_high_risk_mcc", 0.95),
            _alert(3, "impossible_travel", 0.9)]
    table = pa.Table.from_pylist(rows, FRAUD_ALERT.arrow_schema())
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        replace_days(conn, "metrics", "fraud_alerts", table)
    yield rows
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        replace_days(conn, "metrics", "fraud_alerts", FRAUD_ALERT.arrow_schema().empty_table(), days=[DAY])


def test_fraud_alerts_by_rule_and_score_and_one_with_its_evidence(api, fraud_alerts):
    headers = api.bearer("risk", "fraud:read")
    listed = httpx.get(f"{api.base_url}/fraud/alerts", params=WINDOW, headers=headers)
    assert listed.status_code == 200, listed.text
    assert [r["transaction_id"] for r in listed.json()] == ["tx-0001", "tx-0002", "tx-0003"]
    assert listed.json()[1]["card_token"].startswith("tok_") and listed.json()[1]["score"] == 0.95
    travel = httpx.get(f"{api.base_url}/fraud/alerts", params={**WINDOW, "rule": "impossible_travel",
                                                              "min_score": 0.92}, headers=headers)
    assert [r["transaction_id"] for r in travel.json()] == ["tx-0002"]
    paged = httpx.get(f"{api.base_url}/fraud/alerts", params={**WINDOW, "limit": 2}, headers=headers)
    assert len(paged.json()) == 2 and paged.headers["link"].startswith(f"<{api.base_url}/fraud/alerts?")
    assert httpx.get(f"{api.base_url}/fraud/alerts", params={**WINDOW, "rule": "no_such_rule"},
                     headers=headers).status_code == 422
    one = httpx.get(f"{api.base_url}/fraud/alerts/tx-0002", headers=headers)
    assert one.status_code == 200, one.text
    assert one.json()["evidence"] == [
        {"rule": "impossible_travel", "feature": "travel_time_ratio", "value": 0.4},
        {"rule": "night_high_risk_mcc", "feature": "night_high_risk_amount", "value": "2500.00"}]
    assert httpx.get(f"{api.base_url}/fraud/alerts/tx-9999", headers=headers).status_code == 404
    # fraud:read is a scope of its own
    other = api.bearer("metrics-only", "metrics:read")
    for path in ("/fraud/alerts", "/fraud/alerts/tx-0002"):
        assert httpx.get(api.base_url + path, params=WINDOW, headers=other).status_code == 403, path


def test_the_demo_scores_warehouse_alerts_against_the_ground_truth(fraud_alerts, warehouse_url, tmp_path, capsys):
    """`make demo`/`make bench` print precision and recall per rule from the warehouse's alerts."""
    import pyarrow.parquet as pq

    from fluxo_dev.demo import print_fraud_report

    ts = datetime(DAY.year, DAY.month, DAY.day, 3, tzinfo=timezone.utc)
    truth = pa.Table.from_pylist([
        {"transaction_id": "tx-0001", "event_ts": ts, "fraud_pattern": "night_high_risk_mcc", "is_outlier": False},
        {"transaction_id": "tx-0002", "event_ts": ts, "fraud_pattern": "impossible_travel", "is_outlier": False},
        {"transaction_id": "tx-0003", "event_ts": ts, "fraud_pattern": None, "is_outlier": False},
        {"transaction_id": "tx-0004", "event_ts": ts, "fraud_pattern": "card_testing", "is_outlier": False},
    ])
    (tmp_path / "truth").mkdir()
    pq.write_table(truth, tmp_path / "truth" / "transactions.parquet")
    scores = print_fraud_report(warehouse_url, tmp_path, [DAY])
    assert scores["impossible_travel"] == {"planted": 1, "alerts": 2, "true_positives": 1, "precision": 0.5,
                                                "recall": 1.0}
    assert scores["night_high_risk_mcc"]["precision"] == 0.5 and scores["card_testing"]["recall"] == 0.0
    assert scores["overall"] == {"planted": 3, "alerts": 3, "true_positives": 2, "precision": 2 / 3, "recall": 2 / 3}
    out = capsys.readouterr().out
    assert "impossible_travel" in out and "top alerts of 1999-03-01" in out and "tx-0002  score 0.95" in out
