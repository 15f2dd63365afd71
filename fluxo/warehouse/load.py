"""Loads Arrow tables into the warehouse with COPY and a transactional replace.

Two shapes, both in ONE transaction, so a rerun replaces and never duplicates, and
readers see either the old or the new rows, never a mix:

- `replace_days`: facts whose unit of replacement is a whole day (every metric grain):
  delete the days the rows carry, then COPY straight into the table — one write per row.
- `replace_rows`: upsert on an arbitrary natural key: COPY into a temporary staging
  table, delete the target rows sharing its keys, insert from staging.
"""

from __future__ import annotations

import io

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql


def _csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=False, quoting_style="needed"))
    return sink.getvalue()


def copy_into(conn: psycopg.Connection, target: sql.Composable, table: pa.Table, chunk_rows: int = 200_000) -> int:
    """COPY an Arrow table into `target` (same column names); returns rows copied."""
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names)
    stmt = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(target, cols)
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        for batch in table.to_batches(max_chunksize=chunk_rows):
            copy.write(_csv_bytes(pa.Table.from_batches([batch])))
    return table.num_rows


def with_constants(rows: pa.Table, extra: dict[str, object] | None) -> pa.Table:
    for name, value in (extra or {}).items():
        rows = rows.append_column(name, pa.array([value] * rows.num_rows, type=pa.string()))
    return rows


def replace_days(
    conn: psycopg.Connection,
    schema: str,
    table_name: str,
    rows: pa.Table,
    day_column: str = "event_date",
    extra: dict[str, object] | None = None,
) -> dict[str, int]:
    """Replace every row of `schema.table_name` on the days present in `rows` (one transaction)."""
    rows = with_constants(rows, extra)
    target = sql.Identifier(schema, table_name)
    days = sorted(set(rows.column(day_column).to_pylist()))
    with conn.transaction():
        deleted = conn.execute(
            sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(target, sql.Identifier(day_column)), (days,)
        ).rowcount
        copied = copy_into(conn, target, rows)
    return {"copied": copied, "replaced": deleted}


def replace_rows(
    conn: psycopg.Connection,
    schema: str,
    table_name: str,
    rows: pa.Table,
    key: list[str],
    extra: dict[str, object] | None = None,
) -> dict[str, int]:
    """Replace the rows of `schema.table_name` whose `key` values appear in `rows`.

    `extra` adds constant columns (e.g. run_id) to every row. Runs in one transaction.
    """
    rows = with_constants(rows, extra)
    target = sql.Identifier(schema, table_name)
    stage = sql.Identifier(f"_stage_{table_name}")
    join = sql.SQL(" AND ").join(
        sql.SQL("t.{0} = s.{0}").format(sql.Identifier(k)) for k in key
    )
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in rows.column_names)
    with conn.transaction():
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(stage, target)
        )
        copied = copy_into(conn, stage, rows)
        deleted = conn.execute(
            sql.SQL("DELETE FROM {} t USING {} s WHERE {}").format(target, stage, join)
        ).rowcount
        conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(target, cols, cols, stage))
    return {"copied": copied, "replaced": deleted}
