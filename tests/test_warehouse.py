"""Warehouse: migrations are versioned and match the contract; COPY loads replace, never duplicate."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import psycopg
import pyarrow as pa
import pytest

from fluxo.contract import DAILY_METRICS
from fluxo.warehouse import migrate, replace_rows


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


def _metrics(day: date, count: int) -> pa.Table:
    row = {
        "event_date": day, "transaction_count": count, "amount_total": Decimal("100.00") * count,
        "amount_avg": Decimal("100.00"), "amount_min": Decimal("1.00"), "amount_max": Decimal("199.00"),
        "approved_count": count, "declined_count": 0, "reversed_count": 0, "approval_rate": 1.0,
        "distinct_customers": 1, "distinct_merchants": 1, "reporting_currency": "BRL",
    }
    return pa.Table.from_pylist([row], schema=DAILY_METRICS.arrow_schema())


def test_replace_rows_is_idempotent_per_key(warehouse_url):
    day = date(1999, 1, 1)
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        replace_rows(conn, "metrics", "daily_transactions", _metrics(day, 3), ["event_date"], {"run_id": "r1"})
        second = replace_rows(conn, "metrics", "daily_transactions", _metrics(day, 5), ["event_date"], {"run_id": "r2"})
        rows = conn.execute(
            "SELECT transaction_count, run_id FROM metrics.daily_transactions WHERE event_date = %s", (day,)
        ).fetchall()
        conn.execute("DELETE FROM metrics.daily_transactions WHERE event_date = %s", (day,))
    assert second == {"copied": 1, "replaced": 1}
    assert rows == [(5, "r2")]


def test_failed_load_leaves_previous_rows(warehouse_url):
    day = date(1999, 1, 2)
    bad = _metrics(day, 7).set_column(12, "reporting_currency", pa.array([None], pa.string()))
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        replace_rows(conn, "metrics", "daily_transactions", _metrics(day, 3), ["event_date"], {"run_id": "ok"})
        with pytest.raises(psycopg.errors.NotNullViolation):
            replace_rows(conn, "metrics", "daily_transactions", bad, ["event_date"], {"run_id": "bad"})
        rows = conn.execute(
            "SELECT transaction_count FROM metrics.daily_transactions WHERE event_date = %s", (day,)
        ).fetchall()
        conn.execute("DELETE FROM metrics.daily_transactions WHERE event_date = %s", (day,))
    assert rows == [(3,)]


def test_edited_migration_is_refused(warehouse_url):
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'tampered' WHERE version LIKE '0001%'")
    try:
        with pytest.raises(RuntimeError, match="edited after it was applied"):
            migrate(warehouse_url)
    finally:
        from fluxo.warehouse.migrate import available
        import hashlib

        version, sql = available()[0]
        with psycopg.connect(warehouse_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE schema_migrations SET checksum = %s WHERE version = %s",
                (hashlib.sha256(sql.encode()).hexdigest(), version),
            )


def test_replace_days_swaps_whole_days_in_one_transaction(warehouse_url):
    from fluxo.warehouse import replace_days

    day = date(1999, 1, 3)
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        replace_days(conn, "metrics", "daily_transactions", _metrics(day, 3), "event_date", {"run_id": "r1"})
        again = replace_days(conn, "metrics", "daily_transactions", _metrics(day, 4), "event_date", {"run_id": "r2"})
        bad = _metrics(day, 9).set_column(12, "reporting_currency", pa.array([None], pa.string()))
        with pytest.raises(psycopg.errors.NotNullViolation):
            replace_days(conn, "metrics", "daily_transactions", bad, "event_date", {"run_id": "bad"})
        rows = conn.execute(
            "SELECT transaction_count, run_id FROM metrics.daily_transactions WHERE event_date = %s", (day,)
        ).fetchall()
        conn.execute("DELETE FROM metrics.daily_transactions WHERE event_date = %s", (day,))
    assert again == {"copied": 1, "replaced": 1}
    assert rows == [(4, "r2")], "a failed replace must leave the day as it was"


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
