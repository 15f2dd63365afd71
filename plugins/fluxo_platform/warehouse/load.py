"""Loads Arrow tables into the warehouse with COPY and a transactional day swap.

The facts (every metric grain, the outlier summary) are replaced a whole event day at a
time, and their tables are LIST-partitioned by day (migration 0006). `replace_days` COPYs
each day into a fresh table with no index, then, in the SAME transaction, detaches and
drops the day's old partition and attaches the new one, which builds its primary key in
one pass. A rerun therefore replaces and never duplicates, a group that vanished goes
too, and readers see the old day or the new day, never a mix. Compared with DELETE +
COPY into the indexed table, nothing is deleted row by row and no index is maintained
row by row (bench/stages_bench.py measures both against a raw COPY).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable
from datetime import date

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
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


def day_partition(table_name: str, day: date) -> str:
    return f"{table_name}_{day:%Y%m%d}"


def replace_days(
    conn: psycopg.Connection,
    schema: str,
    table_name: str,
    rows: pa.Table,
    day_column: str = "event_date",
    extra: dict[str, object] | None = None,
    days: Iterable[date] = (),
) -> dict[str, int]:
    """Replace every row of `schema.table_name` on the days in `rows` (and in `days`, which
    may be left empty), in one transaction; returns rows copied and rows replaced."""
    rows = with_constants(rows, extra)
    parent = sql.Identifier(schema, table_name)
    every_day = sorted(set(rows.column(day_column).to_pylist()) | set(days))
    copied = replaced = 0
    with conn.transaction():
        # loaders of one table queue here instead of racing for the same day's partition
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{schema}.{table_name}",))
        for day in every_day:
            name = day_partition(table_name, day)
            partition = sql.Identifier(schema, name)
            day_type = rows.schema.field(day_column).type
            day_rows = rows.filter(pc.equal(rows.column(day_column), pa.scalar(day, day_type)))
            incoming = None
            if day_rows.num_rows:
                incoming = f"_incoming_{uuid.uuid4().hex[:12]}"
                # The CHECK lets ATTACH skip its scan for rows outside the day.
                conn.execute(sql.SQL(
                    "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, CHECK ({} = {}))"
                ).format(sql.Identifier(schema, incoming), parent, sql.Identifier(day_column), sql.Literal(day)))
                copied += copy_into(conn, sql.Identifier(schema, incoming), day_rows)
            old = conn.execute("SELECT to_regclass(%s)", (f"{schema}.{name}",)).fetchone()[0]
            if old is not None:
                replaced += conn.execute(sql.SQL("SELECT count(*) FROM {}").format(partition)).fetchone()[0]
                conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, partition))
                conn.execute(sql.SQL("DROP TABLE {}").format(partition))
            if incoming is not None:
                conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    sql.Identifier(schema, incoming), sql.Identifier(name)))
                conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                    parent, partition, sql.Literal(day)))
    return {"copied": copied, "replaced": replaced}
