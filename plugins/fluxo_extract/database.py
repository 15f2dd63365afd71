"""Incremental extraction of the OLTP table `payments.card_transaction` into the raw zone.

Watermark: the composite `(updated_at, id)` of the last landed row. A run first finds its
batch end on the `(updated_at, id)` index (the newest settled row, or the `max_rows`-th), then
lands `watermark < (updated_at, id) <= end` with ONE COPY in the same REPEATABLE READ snapshot
(no ORDER BY: the raw zone needs no order, and a full sort would cost more than the COPY).
Rows that share one `updated_at` are never split or skipped at a batch boundary: the tuple
comparison resumes exactly after the last landed id of that timestamp.

Late commits. A plain "greater than the last watermark" misses rows of a transaction that was
still open while the extractor ran: the source stamps `updated_at` with the transaction's START
time (fluxo_dev.source_db), so when that transaction commits its rows appear BEHIND the watermark.
The extractor therefore only lands *settled* rows, those with `updated_at < horizon`, where

    horizon = min(now(), xact_start of every other open transaction in the source database)

read from `pg_stat_activity` in a statement that finishes before the COPY starts. Why nothing
can ever appear below a horizon once it has been used: a row version with `updated_at < horizon`
was written by a transaction T that started at or before that `updated_at`. When the horizon was
read, T was not open (else `xact_start(T) >= horizon`) and had already started
(`xact_start(T) <= updated_at < horizon <= now()`), so T had already committed (the COPY's later snapshot sees its rows) or aborted
(its rows never exist). Hence every later row has `updated_at >= horizon > watermark`, the
watermark never has to move backwards, and no row is read twice: `skipped_seen` is always 0 for
this source (the key is kept so every extractor reports the same counts). Rows at or beyond
the horizon are `held_back` and land in the next run. Rows the source will never commit
(rolled back) are never landed.

Requirements on the source, checked at run time where possible:
* `updated_at` is set by the database to `now()` on insert and update (the trigger of
  fluxo_dev.source_db; `seed` is a backfill that runs before extraction);
* the extracting role sees other sessions' `xact_start` (its own role's sessions always; other
  roles' with `pg_read_all_stats`); if it does not, the run stops with an error instead of guessing;
* a session that keeps a transaction open holds the horizon back (logged with its pid and
  age): rows are delayed, never lost. Prepared (two-phase) transactions are not supported.

Landing is lossless: PostgreSQL's CSV quotes every field holding a delimiter, quote or line
break and tells NULL (empty, unquoted) from '' (`""`); timestamps are ISO-8601
`YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00`, exact to the microsecond. Junk in text columns (SQL-looking strings, huge fields) lands as it is: the
standardize stage quarantines it. Note that a field may contain a line break, so raw db files
must be read as CSV (multi-line records), not line by line.

A crash after publishing and before the state is confirmed lands the same rows again in a new
batch next run (the landing protocol of fluxo_extract.landing); curate keeps one row per
transaction. The extractor commits the connections it is given (its reads are transactions).
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from datetime import datetime

from fluxo.lake import Lake
from fluxo_platform.settings import get_settings
from fluxo.sources import DB_COLUMNS as COLUMNS
from fluxo.sources import DB_TABLE as TABLE
from fluxo.sources import DB_TIMESTAMP_COLUMNS as TIMESTAMP_COLUMNS

from fluxo_extract.landing import ExtractState, LandingBatch

log = logging.getLogger(__name__)

SOURCE = "db"
STREAM = TABLE
PART_ROWS = 250_000

_HORIZON_SQL = """
SELECT now(),
       min(xact_start) FILTER (WHERE pid <> pg_backend_pid()),
       count(*) FILTER (WHERE state IS NULL AND pid <> pg_backend_pid()
                        AND NOT (pg_has_role(usesysid, 'MEMBER') OR pg_has_role('pg_read_all_stats', 'MEMBER'))),
       (array_agg(pid ORDER BY xact_start) FILTER (WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()))[1]
FROM pg_stat_activity
-- a session this role may not inspect shows NULL in every column but pid/datname/user; one it
-- may inspect shows a NULL state only while its backend starts, which holds no transaction
WHERE datname = current_database() AND (backend_type = 'client backend' OR backend_type IS NULL)
"""


def use_output_format(conn) -> None:
    """Render timestamptz as `YYYY-MM-DD HH:MM:SS[.ffffff]+00` for the current transaction (see select_list)."""
    conn.execute("SET LOCAL TimeZone = 'UTC'")
    conn.execute("SET LOCAL DateStyle = 'ISO'")


def select_list() -> str:
    """The table's columns with timestamps as ISO-8601 `…T…+00:00`: the type's own text output
    (exact to the microsecond) reshaped, several times cheaper than to_char()."""
    return ", ".join(
        f"replace({c}::text, ' ', 'T') || ':00' AS {c}" if c in TIMESTAMP_COLUMNS else c for c in COLUMNS
    )


def settled_horizon(conn) -> datetime:
    """The `updated_at` below which no row can still appear (see the module docstring)."""
    now, oldest_open, hidden, oldest_pid = conn.execute(_HORIZON_SQL).fetchone()
    conn.commit()  # the COPY must take its snapshot after this read, in a later transaction
    if hidden:
        raise PermissionError(
            f"{hidden} session(s) of the source database hide their transaction start from this role: "
            "grant it pg_read_all_stats so late commits can be bounded"
        )
    if oldest_open is not None and oldest_open < now:
        log.info("horizon held at %s by the open transaction of pid %s (%.1fs old)",
                 oldest_open, oldest_pid, (now - oldest_open).total_seconds())
        return oldest_open
    return now


def _after(watermark: dict | None) -> tuple[str, list]:
    if not watermark:
        return "TRUE", []
    return "(updated_at, id) > (%s::timestamptz, %s)", [watermark["updated_at"], watermark["id"]]


def batch_end(conn, watermark: dict | None, horizon: datetime, max_rows: int | None) -> tuple[datetime, int] | None:
    """The (updated_at, id) of the last row of this batch: the newest settled row, or the
    `max_rows`-th after the watermark. Found on the (updated_at, id) index, so the COPY
    itself needs no ORDER BY (no sort of the whole batch)."""
    after, params = _after(watermark)
    if max_rows:
        sql = (f"SELECT updated_at, id FROM {TABLE} WHERE {after} AND updated_at < %s"
               " ORDER BY updated_at, id OFFSET %s LIMIT 1")
        end = conn.execute(sql, [*params, horizon, max_rows - 1]).fetchone()
        if end:
            return end
    sql = (f"SELECT updated_at, id FROM {TABLE} WHERE {after} AND updated_at < %s"
           " ORDER BY updated_at DESC, id DESC LIMIT 1")
    return conn.execute(sql, [*params, horizon]).fetchone()


def extract_source_db(ingest_date: str, conn_id: str = "fluxo_source_db", source_conn=None, state_conn=None,
                      warehouse_conn_id: str = "fluxo_warehouse", max_rows: int | None = None,
                      part_rows: int = PART_ROWS) -> dict:
    """Land the rows changed since the last run as `raw/db/ingest_date=D/batch=B/part-NNNN.csv`.

    `source_conn`/`state_conn` (psycopg 3 connections) default to PostgresHook connections
    `conn_id` (the OLTP) and `warehouse_conn_id` (extraction state). `max_rows` caps one batch
    (the rest lands next run). Returns {batch_id, landed, quarantined, skipped_seen, parts,
    held_back, watermark}.
    """
    started = time.monotonic()
    with ExitStack() as owned:
        if source_conn is None:
            source_conn = owned.enter_context(_hook_conn(conn_id))
        if state_conn is None:
            state_conn = owned.enter_context(_hook_conn(warehouse_conn_id))
        state = ExtractState(state_conn)
        watermark = state.watermark(SOURCE, STREAM)
        state_conn.commit()

        horizon = settled_horizon(source_conn)
        batch = LandingBatch(Lake(get_settings().lake_root), SOURCE, ingest_date)
        after, params = _after(watermark)
        # one snapshot for the batch end, the COPY and the held-back count
        with source_conn.transaction():
            source_conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            use_output_format(source_conn)
            end = batch_end(source_conn, watermark, horizon, max_rows)
            landed = parts = 0
            if end is not None:
                query = (f"COPY (SELECT {select_list()} FROM {TABLE} WHERE {after}"
                         " AND (updated_at, id) <= (%s, %s)) TO STDOUT WITH (FORMAT csv, HEADER)")
                landed, parts = _copy_to_parts(source_conn, query, [*params, *end], batch, part_rows)
            held_back = source_conn.execute(
                f"SELECT count(*) FROM {TABLE} WHERE {after} AND updated_at >= %s", [*params, horizon]
            ).fetchone()[0]

        new_watermark = {"updated_at": end[0].isoformat(), "id": end[1]} if end is not None else None
        batch.publish()
        counts = {"batch_id": batch.batch_id, "landed": landed, "quarantined": len(batch.quarantined),
                  "skipped_seen": 0, "parts": parts, "held_back": held_back}
        state.confirm(batch, STREAM, new_watermark, counts)
        state_conn.commit()
    counts["watermark"] = new_watermark or watermark
    elapsed = time.monotonic() - started
    log.info("db extract %s: landed %d rows in %d parts (%.0f rows/s), %d held back; watermark %s",
             batch.batch_id, landed, parts, landed / elapsed if elapsed else 0, held_back, counts["watermark"])
    return counts


def _copy_to_parts(conn, query: str, params: list, batch: LandingBatch, part_rows: int):
    """Stream the COPY into parts of `part_rows` rows, each with the header.

    The server sends one CopyData message per row (a protocol guarantee), so counting messages
    counts rows exactly, even when a field holds line breaks.
    """
    landed, parts, header = 0, 0, b""
    part = bytearray()  # not a list of row objects: those would be tracked (and re-scanned) by the GC
    in_part = 0

    def flush() -> None:
        nonlocal parts, part, in_part
        parts += 1
        batch.write(f"part-{parts:04d}.csv", bytes(part), records=in_part)
        part, in_part = bytearray(header), 0

    with conn.cursor() as cur, cur.copy(query, params) as copy:
        rows = iter(copy)
        header = bytes(next(rows, b""))
        part += header
        for row in rows:
            part += row
            in_part += 1
            if in_part >= part_rows:
                landed += in_part
                flush()
    if in_part:
        landed += in_part
        flush()
    return landed, parts


class _hook_conn:
    """A psycopg 3 connection from PostgresHook (psycopg 3 serves SQLAlchemy 2 in this provider), closed on exit."""

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id

    def __enter__(self):
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        self.conn = PostgresHook(postgres_conn_id=self.conn_id).get_conn()
        return self.conn

    def __exit__(self, *exc) -> None:
        self.conn.close()
