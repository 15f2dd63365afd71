"""End to end: four real sources -> `transactions_etl` run by Airflow -> lake, warehouse -> API.

The generated day is put where each source keeps it: partner files in the S3 server, rows
in the OLTP database, events in the Kafka topic, records behind the partner-API simulator.

The expected metrics come from the generator's ground truth (canonical values of every
valid transaction and a label for every rendered record), computed with DuckDB — an
independent path from the Spark stages under test.
"""

from __future__ import annotations

import subprocess
import uuid
from datetime import date
from decimal import Decimal

import duckdb
import psycopg
import pytest

from fluxo.contract import FRAUD_ALERT, TRANSACTION
from fluxo.lake import Lake
from fluxo_platform.lakefs import read_delta
from tests.conftest import AIRFLOW_BIN, reset_sources

DAY = date(2026, 11, 26)
BROKEN_DAY = date(2026, 11, 24)
METRIC_COLUMNS = [
    "event_date", "transaction_count", "amount_total", "amount_avg", "amount_min", "amount_max",
    "approved_count", "declined_count", "reversed_count", "approval_rate",
    "distinct_customers", "distinct_merchants", "reporting_currency",
]


def run_dag(env: dict, day: date) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(AIRFLOW_BIN), "dags", "test", "transactions_etl", day.isoformat()],
        env=env, capture_output=True, text=True, timeout=900,
    )
    with psycopg.connect(env["FLUXO_DATABASE_URL"]) as conn:
        found = conn.execute(
            "SELECT run_id FROM audit.pipeline_runs WHERE ingest_date = %s ORDER BY finished_at DESC LIMIT 1", (day,)
        ).fetchone()
    proc.run_id = found[0] if found else None
    return proc


def warehouse_metrics(url: str) -> dict:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT {', '.join(METRIC_COLUMNS)} FROM metrics.daily_transactions ORDER BY event_date"
        ).fetchall()
    return {r[0]: dict(zip(METRIC_COLUMNS, r)) for r in rows}


def curated_rows(lake_root: str):
    return read_delta(Lake(lake_root).curated_transactions, TRANSACTION.arrow_schema()).sort_by("transaction_id")


def expected_metrics(generated) -> dict:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rows = con.execute(
        f"""
        WITH valid AS (
            SELECT DISTINCT transaction_id FROM read_parquet('{generated}/labels/labels.parquet')
            WHERE expected = 'valid'
        ), t AS (
            SELECT tr.* FROM read_parquet('{generated}/truth/transactions.parquet') tr JOIN valid USING (transaction_id)
        )
        SELECT CAST(event_ts AS DATE) AS event_date, count(*), sum(amount_reporting),
               round(avg(amount_reporting), 2), min(amount_reporting), max(amount_reporting),
               count(*) FILTER (WHERE status = 'approved'), count(*) FILTER (WHERE status = 'declined'),
               count(*) FILTER (WHERE status = 'reversed'),
               count(*) FILTER (WHERE status = 'approved') / count(*),
               count(DISTINCT customer_id), count(DISTINCT merchant_id)
        FROM t GROUP BY 1 ORDER BY 1
        """
    ).fetchall()
    return {r[0]: dict(zip(METRIC_COLUMNS, [*r, "BRL"])) for r in rows}


@pytest.fixture(scope="module")
def generated(tmp_path_factory, stack_env, warehouse_url):
    from fluxo_dev.generator import generate, upload_landing
    from fluxo_dev.source_db import seed
    from fluxo_dev.streaming import produce

    reset_sources(stack_env, warehouse_url)
    out = tmp_path_factory.mktemp("generated")
    generate(out, DAY, days=1, rows_per_day=3000, seed=11)
    upload_landing(out, [DAY])
    seed(stack_env["FLUXO_SOURCE_DATABASE_URL"], out, [DAY])
    produce(out, stack_env["FLUXO_KAFKA_BOOTSTRAP"])
    return out


@pytest.fixture(scope="module")
def pipeline_env(airflow_env, generated):
    from fluxo_dev.simulator import start_simulator
    from fluxo_dev.stack.s3 import LAKE_BUCKET

    # the lake in the local S3 server, as `make demo` has it; a prefix of its own, because other
    # tests land raw batches for the same day
    lake_root = f"s3://{LAKE_BUCKET}/e2e-{uuid.uuid4().hex[:8]}"
    with start_simulator(generated) as partner_api:
        yield {**airflow_env, "FLUXO_LAKE_ROOT": lake_root,
               "AIRFLOW_CONN_FLUXO_PARTNER_API": partner_api.connection_uri()}


@pytest.fixture(scope="module")
def first_run(pipeline_env):
    proc = run_dag(pipeline_env, DAY)
    assert proc.returncode == 0, (proc.stdout[-4000:], proc.stderr[-4000:])
    return proc


def test_a_successful_run_logs_no_error(first_run):
    """An engineer reading a green run's log finds no error line to chase (the Glue console link of
    a local stage, a Data Docs page that failed to render)."""
    log = first_run.stdout + first_run.stderr
    errors = [line[:300] for line in log.splitlines()
              if "[error" in line or "unexpected Exception occurred during data docs rendering" in line]
    assert not errors, errors


def test_warehouse_metrics_equal_ground_truth(first_run, generated, warehouse_url):
    expected = expected_metrics(generated)
    actual = warehouse_metrics(warehouse_url)
    assert set(expected) <= set(actual), f"missing dates {set(expected) - set(actual)}"
    for day, exp in expected.items():
        got = actual[day]
        for col in METRIC_COLUMNS:
            if col == "approval_rate":
                assert got[col] == pytest.approx(float(exp[col]), abs=1e-9), (day, col)
            elif isinstance(got[col], Decimal):
                assert got[col] == Decimal(str(exp[col])).quantize(Decimal("0.01")), (day, col)
            else:
                assert got[col] == exp[col], (day, col)


def test_audit_counts_add_up(first_run, generated, warehouse_url):
    """Every record is staged, quarantined with its reason (at extraction or standardize), or dropped as a duplicate."""
    labels = f"read_parquet('{generated}/labels/labels.parquet')"
    con = duckdb.connect()
    unique_valid, quarantined = con.execute(
        f"SELECT count(DISTINCT transaction_id) FILTER (WHERE expected = 'valid'),"
        f" count(*) FILTER (WHERE expected = 'quarantined') FROM {labels}"
    ).fetchone()
    with psycopg.connect(warehouse_url) as conn:
        state, counts = conn.execute(
            "SELECT state, counts FROM audit.pipeline_runs WHERE run_id = %s", (first_run.run_id,)
        ).fetchone()
    assert state == "success"
    assert set(counts["extracted"]) == {"s3", "api", "db", "kafka"}
    standardize = counts["stage_stats"]["standardize"]
    assert standardize["staged"] == unique_valid
    assert standardize["quarantined"] + counts["extract_quarantined"] == quarantined
    assert standardize["read"] == standardize["staged"] + standardize["quarantined"] + standardize["duplicates_dropped"]
    by_reason = dict(con.execute(
        f"SELECT expected_reason, count(*) FROM {labels} WHERE expected = 'quarantined' GROUP BY 1"
    ).fetchall())
    for reason, n in standardize["quarantine_by_reason"].items():
        assert n <= by_reason.get(reason, 0), f"{reason}: {n} quarantined, {by_reason.get(reason, 0)} planted"


FRAUD_COLUMNS = [c for c in FRAUD_ALERT.names]


def warehouse_alerts(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT {', '.join(FRAUD_COLUMNS)} FROM metrics.fraud_alerts"
                            " ORDER BY event_date, transaction_id").fetchall()


def history_alerts(lake_root: str):
    return read_delta(Lake(lake_root).fraud_alerts, FRAUD_ALERT.arrow_schema()).sort_by(
        [("event_date", "ascending"), ("transaction_id", "ascending")])


def test_fraud_alerts_equal_an_independent_computation(first_run, pipeline_env, generated, warehouse_url):
    """The warehouse's alerts are what DuckDB computes from the curated rows with the same suite
    (fluxo_dev.fraud_reference: SQL, not the Spark stage's code); the audit counts them, aggregate
    counts them per grain, and they score against the generator's planted fraud."""
    from fluxo.fraud_rules import load_rules
    from fluxo_dev.demo import print_fraud_report
    from fluxo_dev.fraud_reference import reference_alerts

    with psycopg.connect(warehouse_url) as conn:
        alerts_audited, counts = conn.execute(
            "SELECT fraud_alerts, counts FROM audit.pipeline_runs WHERE run_id = %s", (first_run.run_id,)).fetchone()
        per_day = dict(conn.execute("SELECT event_date, fraud_alert_count FROM metrics.daily_transactions").fetchall())
    dates = counts["stage_stats"]["fraud"]["dates"]
    rows = warehouse_alerts(warehouse_url)
    found = {r[FRAUD_COLUMNS.index("transaction_id")]: set(r[FRAUD_COLUMNS.index("rules")].split(",")) for r in rows
             if r[0].isoformat() in dates}
    con = duckdb.connect()
    con.register("source", curated_rows(pipeline_env["FLUXO_LAKE_ROOT"]))
    assert found and found == reference_alerts(con, dates, load_rules())
    assert alerts_audited == len(found)
    for day in dates:
        assert per_day[date.fromisoformat(day)] == sum(1 for r in rows if r[0].isoformat() == day)
    # the planted fraud of the generated day: every rule's positives are found (the demo's report)
    scores = print_fraud_report(warehouse_url, generated, [DAY])
    assert scores["overall"]["recall"] == 1.0 and scores["overall"]["planted"] >= 24, scores
    # the same alerts are in this lake's Delta history (the warehouse also holds other tests' days)
    assert history_alerts(pipeline_env["FLUXO_LAKE_ROOT"]).num_rows == len(found)


def test_rerun_changes_nothing(first_run, pipeline_env, warehouse_url):
    """A rerun of the unchanged day skips every Glue stage (and says so), and changes nothing."""
    from fluxo_tasks.pipeline import GLUE_STAGES

    lake_root = pipeline_env["FLUXO_LAKE_ROOT"]
    before_curated, before_metrics = curated_rows(lake_root), warehouse_metrics(warehouse_url)
    before_alerts, before_history = warehouse_alerts(warehouse_url), history_alerts(lake_root)
    proc = run_dag(pipeline_env, DAY)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with psycopg.connect(warehouse_url) as conn:
        state, stages = conn.execute(
            "SELECT state, stages FROM audit.pipeline_runs WHERE run_id = %s", (proc.run_id,)).fetchone()
    assert state == "success"
    for stage in GLUE_STAGES:
        assert (stages[stage]["skipped"] or "").startswith("inputs unchanged since run "), (stage, stages[stage])
    assert "Skipping curate: its inputs" in proc.stdout + proc.stderr
    after_curated = curated_rows(lake_root)
    assert after_curated.num_rows == before_curated.num_rows
    assert after_curated.equals(before_curated)
    ids = after_curated.column("transaction_id").to_pylist()
    assert len(ids) == len(set(ids)), "curated data holds duplicate transaction ids"
    assert warehouse_metrics(warehouse_url) == before_metrics
    # fraud alerts: row-identical in the warehouse and the Delta history (nothing doubled or re-stamped)
    assert before_alerts and warehouse_alerts(warehouse_url) == before_alerts
    assert history_alerts(lake_root).equals(before_history)


def test_api_serves_the_warehouse_numbers(first_run, warehouse_url, api_server):
    import httpx

    base, client_id, client_secret = api_server
    token = httpx.post(
        f"{base}/auth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret},
    ).json()["access_token"]
    answer = httpx.get(
        f"{base}/metrics/daily",
        params={"from": "2026-11-01", "to": "2026-11-30"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    served = answer.json()
    rows = served["data"] if isinstance(served, dict) else served
    expected = {d: m for d, m in warehouse_metrics(warehouse_url).items() if date(2026, 11, 1) <= d <= date(2026, 11, 30)}
    assert [r["event_date"] for r in rows] == [d.isoformat() for d in expected]
    for row in rows:
        exp = expected[date.fromisoformat(row["event_date"])]
        assert row["transaction_count"] == exp["transaction_count"]
        assert Decimal(str(row["amount_total"])) == exp["amount_total"]
    fraud = httpx.get(f"{base}/fraud/alerts", params={"from": "2026-11-01", "to": "2026-11-30", "limit": 1000},
                      headers={"Authorization": f"Bearer {token}"})
    assert fraud.status_code == 200, fraud.text
    served = [(a["event_date"], a["transaction_id"], a["rules"]) for a in fraud.json()]
    columns = FRAUD_COLUMNS
    assert served == [(r[0].isoformat(), r[columns.index("transaction_id")], r[columns.index("rules")])
                      for r in warehouse_alerts(warehouse_url)]
    one = httpx.get(f"{base}/fraud/alerts/{served[0][1]}", headers={"Authorization": f"Bearer {token}"}).json()
    assert [e["rule"] for e in one["evidence"]] == served[0][2].split(",")


def test_critical_expectation_failure_stops_the_run(first_run, pipeline_env, warehouse_url):
    """A decimal-shift bug in a partner export (an absurd amount): the row is quarantined with its
    reason (no row rule fails a day), and a day whose source is all quarantined stops at the gate,
    before curation, naming the source."""
    import boto3

    header = "id_transacao;data_hora;cliente;cartao;cartao_final;estabelecimento;mcc;valor;moeda;pais;canal;status"
    row = "TXN-ABSURD-1;24/11/2026 10:00:00;C000001;tok_0123456789abcdef0123456789abcdef;1234;M00001;5411;987.654.321.000,00;BRL;BR;presencial;aprovada"
    s3 = boto3.client(
        "s3", endpoint_url=pipeline_env["FLUXO_S3_ENDPOINT"], region_name="us-east-1",
        aws_access_key_id=pipeline_env["FLUXO_S3_ACCESS_KEY"], aws_secret_access_key=pipeline_env["FLUXO_S3_SECRET_KEY"],
    )
    s3.put_object(
        Bucket="fluxo-landing", Key=f"transactions/dt={BROKEN_DAY}/shifted-export.csv",
        Body=(header + "\n" + row + "\n").encode(),
    )
    proc = run_dag(pipeline_env, BROKEN_DAY)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "critical expectation failed" in output
    assert "s3: 1 of 1 records quarantined" in output, output[-4000:]
    curated = curated_rows(pipeline_env["FLUXO_LAKE_ROOT"]).column("event_ts").to_pylist()
    assert BROKEN_DAY not in {ts.date() for ts in curated}, "a failed quality gate must not curate the day"
    with psycopg.connect(warehouse_url) as conn:
        state, message = conn.execute(
            "SELECT state, message FROM audit.pipeline_runs WHERE ingest_date = %s ORDER BY finished_at DESC LIMIT 1",
            (BROKEN_DAY,),
        ).fetchone()
    assert state == "failed" and "quality_gate" in message
