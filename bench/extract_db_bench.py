"""DB extraction throughput: `extract_source_db` on ~1M rows of `payments.card_transaction`.

    .venv/bin/python bench/extract_db_bench.py [--rows 1000000]

The table is seeded from the generator (one day, COPY), then grown to --rows by copying
those rows with new ids and uuids (the generator spreads transactions over four sources;
rendering 1M db records alone would mean generating ~6M transactions). Prints rows/s of
* a plain `COPY (SELECT * …) TO STDOUT` of the same rows into /dev/null (the reference),
* the extractor's own COPY query (ISO timestamps, watermark order) into /dev/null,
* the full extraction (COPY, parts in the raw zone, publish, state confirmed),
and the extraction/plain-COPY ratio. The services run in their own home
(.fluxo/bench-extract-db-home), stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date
from pathlib import Path

from _common import bench_services


def copy_to_devnull(conn, query: str, params=()) -> tuple[int, float]:
    """(rows, seconds) of a COPY … TO STDOUT read into /dev/null."""
    rows = -1  # the header
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink, conn.cursor() as cur, cur.copy(query, params) as copy:
        for data in copy:
            sink.write(data)
            rows += 1
    conn.commit()
    return rows, time.perf_counter() - started


def grow(conn, table: str, columns: tuple[str, ...], target: int) -> int:
    """Copy the seeded rows (new id, new txn_uuid, timestamps shifted by k seconds) until `target` rows."""
    base, max_id, min_id = conn.execute(f"SELECT count(*), max(id), min(id) FROM {table}").fetchone()
    copies = -(-target // base) - 1
    stride = 10 ** len(str(max_id - min_id + 1))
    shifted = {"id": "id + k * %(stride)s", "txn_uuid": "gen_random_uuid()",
               "created_at": "created_at + k * interval '1 second'",
               "updated_at": "updated_at + k * interval '1 second'"}
    select = ", ".join(shifted.get(c, c) for c in columns)
    conn.execute("SET LOCAL fluxo.backfill = 'on'")  # a bulk backfill: keep the copied timestamps
    conn.execute(
        f"INSERT INTO {table} ({', '.join(columns)})"
        f" SELECT {select} FROM {table}, generate_series(1, %(copies)s) AS k LIMIT %(missing)s",
        {"stride": stride, "copies": copies, "missing": target - base},
    )
    conn.commit()
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--day", type=date.fromisoformat, default=date(2026, 11, 20))
    args = parser.parse_args()

    with bench_services("bench-extract-db-home") as home:
        run(home, args)


def run(home: Path, args) -> None:
    import psycopg

    from fluxo_dev.generator import generate
    from fluxo_platform.settings import get_settings
    from fluxo_dev.source_db import COLUMNS, TABLE, seed
    from fluxo_platform.warehouse import migrate
    from fluxo_extract.database import extract_source_db, select_list, use_output_format

    get_settings.cache_clear()
    settings = get_settings()
    migrate(settings.database_url)
    generate(home / "generated", args.day, days=1, rows_per_day=max(args.rows // 3, 1000), seed=7, sources=("db",))
    t = time.perf_counter()
    seeded = seed(settings.source_database_url, home / "generated")
    seed_s = time.perf_counter() - t
    with psycopg.connect(settings.source_database_url) as conn:
        total = grow(conn, TABLE, COLUMNS, args.rows)
    with psycopg.connect(settings.source_database_url, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {TABLE}")
    print(f"source table: {total:,} rows ({seeded:,} seeded from the generator by COPY in {seed_s:.2f} s)")

    with psycopg.connect(settings.source_database_url) as conn:
        copy_to_devnull(conn, f"COPY (SELECT * FROM {TABLE}) TO STDOUT WITH (FORMAT csv, HEADER)")  # warm cache
        plain_rows, plain_s = copy_to_devnull(conn, f"COPY (SELECT * FROM {TABLE}) TO STDOUT WITH (FORMAT csv, HEADER)")
        use_output_format(conn)
        end = conn.execute(f"SELECT updated_at, id FROM {TABLE} ORDER BY updated_at DESC, id DESC LIMIT 1").fetchone()
        query_rows, query_s = copy_to_devnull(
            conn, f"COPY (SELECT {select_list()} FROM {TABLE} WHERE (updated_at, id) <= (%s, %s))"
                  " TO STDOUT WITH (FORMAT csv, HEADER)", end)
    with psycopg.connect(settings.source_database_url) as source, psycopg.connect(settings.database_url) as state:
        t = time.perf_counter()
        counts = extract_source_db("2026-11-27", source_conn=source, state_conn=state)
        extract_s = time.perf_counter() - t
        t = time.perf_counter()
        again = extract_source_db("2026-11-27", source_conn=source, state_conn=state)
        again_s = time.perf_counter() - t
    assert plain_rows == query_rows == counts["landed"] == total, (plain_rows, query_rows, counts, total)
    assert again["landed"] == 0

    plain_rate, query_rate, extract_rate = plain_rows / plain_s, query_rows / query_s, counts["landed"] / extract_s
    print(f"plain COPY (SELECT * ...) -> /dev/null:        {plain_rows:,} rows in {plain_s:.2f} s = {plain_rate:,.0f} rows/s")
    print(f"extractor's COPY query   -> /dev/null:        {query_rows:,} rows in {query_s:.2f} s = {query_rate:,.0f} rows/s")
    print(f"extract_source_db (raw zone, state confirmed): {counts['landed']:,} rows in {extract_s:.2f} s"
          f" = {extract_rate:,.0f} rows/s in {counts['parts']} parts")
    print(f"ratio extraction / plain COPY: {extract_rate / plain_rate:.2f}")
    print(f"second run (nothing new): {again_s:.2f} s")


if __name__ == "__main__":
    main()
