"""Warehouse: migrations are versioned and match the contract; COPY loads replace, never duplicate."""

from __future__ import annotations

import os
from datetime import date
from decimal import Decimal

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from fluxo.contract import DAILY_METRICS
from fluxo_platform.warehouse import migrate, replace_days
from fluxo_platform.warehouse.load import copy_into, with_constants


def test_migrations_are_applied_once(warehouse_url):
    assert migrate(warehouse_url) == []
    with psycopg.connect(warehouse_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions and versions[0].startswith("0001")


def test_daily_metrics_table_matches_the_contract(warehouse_url):
    with psycopg.connect(warehouse_url) as conn:
        columns = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'metrics' AND table_name = 'daily_transactions'"
            ).fetchall()
        )
    for name, sql_type in DAILY_METRICS.sql_types().items():
        assert columns.get(name) == sql_type, f"metrics.daily_transactions.{name}: {columns.get(name)} != {sql_type}"


def test_fraud_alerts_table_matches_the_contract_and_is_day_partitioned(warehouse_url):
    from fluxo.contract import FRAUD_ALERT

    with psycopg.connect(warehouse_url) as conn:
        columns = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'metrics' AND table_name = 'fraud_alerts'").fetchall())
        partitioned = conn.execute(
            "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'metrics.fraud_alerts'::regclass").fetchone()
        mart = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'mart'"
            " AND table_name = 'fraud_alerts'").fetchall()}
    assert set(columns) == {*FRAUD_ALERT.names, "loaded_at"}
    for name, sql_type in FRAUD_ALERT.sql_types().items():
        assert columns[name] == sql_type, f"metrics.fraud_alerts.{name}: {columns[name]} != {sql_type}"
    assert partitioned == ("l",)
    assert {"transaction_id", "card_token", "rules", "score"} <= mart and "run_id" not in mart


def _metrics(day: date, count: int) -> pa.Table:
    row = {
        "event_date": day, "transaction_count": count, "amount_total": Decimal("100.00") * count,
        "amount_avg": Decimal("100.00"), "amount_min": Decimal("1.00"), "amount_max": Decimal("199.00"),
        "approved_count": count, "declined_count": 0, "reversed_count": 0, "approval_rate": 1.0,
        "distinct_customers": 1, "distinct_merchants": 1, "reporting_currency": "BRL",
    }
    return pa.Table.from_pylist([row], schema=DAILY_METRICS.arrow_schema())


def test_edited_migration_is_refused(warehouse_url):
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'tampered' WHERE version LIKE '0001%'")
    try:
        with pytest.raises(RuntimeError, match="edited after it was applied"):
            migrate(warehouse_url)
    finally:
        from fluxo_platform.warehouse.migrate import available
        import hashlib

        version, sql = available()[0]
        with psycopg.connect(warehouse_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE schema_migrations SET checksum = %s WHERE version = %s",
                (hashlib.sha256(sql.encode()).hexdigest(), version),
            )


def _partitions(conn, table: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass ORDER BY 1", (table,)
    )]


def _leftover_incoming(conn) -> list[str]:
    return [r[0] for r in conn.execute("SELECT relname FROM pg_class WHERE relname LIKE '\\_incoming\\_%'")]


def test_replace_days_swaps_whole_days_in_one_transaction(warehouse_url):
    day, other = date(1999, 1, 3), date(1999, 1, 4)
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        replace_days(conn, "metrics", "daily_transactions", _metrics(day, 3), "event_date", {"run_id": "r1"})
        replace_days(conn, "metrics", "daily_transactions", _metrics(other, 8), "event_date", {"run_id": "r1"})
        again = replace_days(conn, "metrics", "daily_transactions", _metrics(day, 4), "event_date", {"run_id": "r2"})
        bad = _metrics(day, 9).set_column(12, "reporting_currency", pa.array([None], pa.string()))
        with pytest.raises(psycopg.errors.NotNullViolation):
            replace_days(conn, "metrics", "daily_transactions", bad, "event_date", {"run_id": "bad"})
        rows = conn.execute(
            "SELECT event_date, transaction_count, run_id FROM metrics.daily_transactions"
            " WHERE event_date IN (%s, %s) ORDER BY 1", (day, other)
        ).fetchall()
        partitions = _partitions(conn, "metrics.daily_transactions")
        leftovers = _leftover_incoming(conn)
        replace_days(conn, "metrics", "daily_transactions", _metrics(day, 0).slice(0, 0), days=[day, other])
        emptied = conn.execute(
            "SELECT count(*) FROM metrics.daily_transactions WHERE event_date IN (%s, %s)", (day, other)
        ).fetchone()[0]
        gone = {"daily_transactions_19990103", "daily_transactions_19990104"} & set(
            _partitions(conn, "metrics.daily_transactions"))
    assert again == {"copied": 1, "replaced": 1}
    assert rows == [(day, 4, "r2"), (other, 8, "r1")], "a failed replace must leave the day as it was"
    assert {"daily_transactions_19990103", "daily_transactions_19990104"} <= set(partitions)
    assert leftovers == [], "a failed load must not leave its incoming table behind"
    assert emptied == 0 and not gone, "days listed without rows are emptied"


def test_a_replaced_day_keeps_its_primary_key(warehouse_url):
    day = date(1999, 1, 5)
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        replace_days(conn, "metrics", "daily_transactions", _metrics(day, 3), extra={"run_id": "r1"})
        replace_days(conn, "metrics", "daily_transactions", _metrics(day, 3), extra={"run_id": "r2"})
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO metrics.daily_transactions SELECT * FROM metrics.daily_transactions WHERE event_date = %s",
                (day,))
        with pytest.raises(psycopg.errors.CheckViolation):  # the day partition takes its day only
            conn.execute("UPDATE metrics.daily_transactions_19990105 SET event_date = event_date + 1")
        replace_days(conn, "metrics", "daily_transactions", _metrics(day, 0).slice(0, 0), days=[day])


def _before_0009(rows: pa.Table) -> pa.Table:
    """Metric rows as the tables had them before the fraud-flag measures (migration 0009)."""
    return rows.drop_columns(["fraud_alert_count", "fraud_alert_rate"])


def test_day_partition_migration_keeps_existing_rows_and_views(warehouse_url):
    """0006 on a warehouse that already has facts: rows, views and the BI grant survive."""
    from fluxo_platform.warehouse.migrate import available

    scratch = f"fluxo_migration_{os.getpid()}"
    with psycopg.connect(warehouse_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {scratch}")
        admin.execute(f"CREATE DATABASE {scratch}")
    url = make_conninfo(warehouse_url, dbname=scratch)
    try:
        migrations = dict(available())
        before = [v for v in migrations if v < "0006"]
        with psycopg.connect(url, autocommit=True) as conn:
            for version in before:
                conn.execute(migrations[version])
            for day in (date(2026, 1, 1), date(2026, 1, 2)):
                copy_into(conn, sql.Identifier("metrics", "daily_transactions"),
                          with_constants(_before_0009(_metrics(day, 5)), {"run_id": "old"}))
            conn.execute("INSERT INTO metrics.outlier_summary (event_date, method, mcc, outlier_count, max_score,"
                         " amount_reporting_total, run_id) VALUES ('2026-01-01', 'mad_zscore', '5411', 2, 9.5, 10, 'old')")
            conn.execute(migrations["0006_day_partitions"])
            daily = conn.execute("SELECT event_date, transaction_count FROM mart.daily_transactions ORDER BY 1").fetchall()
            outliers = conn.execute("SELECT outlier_count FROM mart.outlier_summary").fetchall()
            partitions = _partitions(conn, "metrics.daily_transactions")
            bi_reads = conn.execute(
                "SELECT has_table_privilege('fluxo_bi_reader', 'mart.daily_transactions', 'SELECT')").fetchone()[0]
            replace_days(conn, "metrics", "daily_transactions", _before_0009(_metrics(date(2026, 1, 1), 6)),
                         extra={"run_id": "new"})
            swapped = conn.execute("SELECT transaction_count FROM mart.daily_transactions ORDER BY event_date").fetchall()
        assert daily == [(date(2026, 1, 1), 5), (date(2026, 1, 2), 5)]
        assert outliers == [(2,)]
        assert partitions == ["daily_transactions_20260101", "daily_transactions_20260102"]
        assert bi_reads
        assert swapped == [(6,), (5,)]
    finally:
        with psycopg.connect(warehouse_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)")


def test_bi_reader_role_reads_marts_only(warehouse_url):
    with psycopg.connect(warehouse_url) as conn:
        can = lambda obj: conn.execute(  # noqa: E731
            "SELECT has_table_privilege('fluxo_bi_reader', %s, 'SELECT')", (obj,)
        ).fetchone()[0]
        marts = [r[0] for r in conn.execute(
            "SELECT 'mart.' || table_name FROM information_schema.views WHERE table_schema = 'mart'"
        )]
        assert "mart.daily_transactions" in marts
        assert all(can(m) for m in marts), "the BI role must read every mart view"
        assert not can("metrics.daily_transactions") and not can("audit.api_access")
        assert not conn.execute(
            "SELECT has_table_privilege('fluxo_bi_reader', 'mart.daily_transactions', 'INSERT')"
        ).fetchone()[0]
