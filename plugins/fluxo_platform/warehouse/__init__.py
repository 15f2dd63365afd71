"""The PostgreSQL warehouse: versioned migrations, COPY-based loads, the audit trail."""

from fluxo_platform.warehouse.load import replace_days
from fluxo_platform.warehouse.migrate import migrate

WAREHOUSE_CONN_ID = "fluxo_warehouse"


def warehouse_connection():
    """An autocommit psycopg connection to the warehouse, from Airflow's `fluxo_warehouse` connection."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    conn = PostgresHook(postgres_conn_id=WAREHOUSE_CONN_ID).get_conn()
    conn.autocommit = True
    return conn


__all__ = ["WAREHOUSE_CONN_ID", "migrate", "replace_days", "warehouse_connection"]
