"""The OLTP source database and its incremental extractor, against the real local PostgreSQL."""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from fluxo_dev.generator import generate
from fluxo_dev.generator.render import DB_HEADER
from fluxo.lake import Lake
from fluxo_platform.settings import REPO_ROOT
from fluxo_dev.source_db import COLUMNS, TABLE, ensure_schema, late_commit, seed, simulate_activity
from fluxo.transforms.standardize import ISO_OFFSET_PATTERN

sys.path.insert(0, str(REPO_ROOT / "plugins"))
from fluxo_extract.database import extract_source_db, select_list, use_output_format  # noqa: E402

DAY = date(2026, 11, 20)
INGEST = "2026-11-26"
csv.field_size_limit(1 << 30)  # the hostile rows carry a 1 MB field


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("generated-db")
    generate(out, DAY, days=1, rows_per_day=3000, seed=5, sources=("db",))
    return out


@pytest.fixture
def source_url(stack_env, warehouse_url) -> str:
    """An empty source table and no db extraction state."""
    url = stack_env["FLUXO_SOURCE_DATABASE_URL"]
    with psycopg.connect(url) as conn:
        conn.execute("DROP SCHEMA IF EXISTS payments CASCADE")
    ensure_schema(url)
    with psycopg.connect(warehouse_url) as conn:
        conn.execute("DELETE FROM extract.watermark WHERE source = 'db'")
        conn.execute("DELETE FROM extract.batch WHERE source = 'db'")
    return url


@pytest.fixture
def conns(source_url, warehouse_url):
    with psycopg.connect(source_url) as source, psycopg.connect(warehouse_url) as state:
        yield source, state


def extract(conns, **kwargs) -> dict:
    source, state = conns
    return extract_source_db(INGEST, source_conn=source, state_conn=state, **kwargs)


def landed_rows(counts: dict) -> list[dict]:
    """Rows of a landed batch, parsed back with the csv module."""
    raw = Path(Lake(os.environ["FLUXO_LAKE_ROOT"]).raw("db", INGEST, counts["batch_id"]))
    files = sorted(raw.glob("part-*.csv"))
    assert [f.name for f in files] == [f"part-{i:04d}.csv" for i in range(1, counts["parts"] + 1)]
    rows = []
    for f in files:
        with f.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            assert tuple(reader.fieldnames) == COLUMNS
            rows += list(reader)
    return rows


def landed_ids(counts: dict) -> list[int]:
    return [int(r["id"]) for r in landed_rows(counts)]


def test_columns_follow_the_documented_db_shape():
    assert ",".join(COLUMNS) == DB_HEADER


def test_seed_loads_every_generated_row_once(source_url, generated):
    csv_rows = sum(1 for _ in open(generated / "db" / f"dt={DAY}" / "card_transaction.csv")) - 1
    assert seed(source_url, generated) == csv_rows > 300
    assert seed(source_url, generated, [DAY]) == 0
    with psycopg.connect(source_url) as conn:
        count, first, last = conn.execute(f"SELECT count(*), min(updated_at), max(updated_at) FROM {TABLE}").fetchone()
    assert count == csv_rows
    # the backfill keeps the generator's timestamps (the trigger stamps only live writes)
    assert DAY - timedelta(days=1) <= first.date() <= last.date() <= DAY + timedelta(days=1)


def test_two_runs_land_new_and_updated_rows_once(source_url, generated):
    total = seed(source_url, generated)
    # the default path: PostgresHook connections from the stack's AIRFLOW_CONN_* variables
    first = extract_source_db(INGEST)
    assert first["landed"] == total and first["parts"] == 1 and first["skipped_seen"] == 0
    assert sorted(landed_ids(first)) == sorted(set(landed_ids(first)))

    touched = simulate_activity(source_url, n_updates=5, n_inserts=7)
    second = extract_source_db(INGEST)
    rows = landed_rows(second)
    assert second["landed"] == len(rows) == 12
    by_id = {int(r["id"]): r for r in rows}
    assert set(by_id) == set(touched["updated"]) | set(touched["inserted"])
    assert {by_id[i]["status_code"] for i in touched["updated"]} == {"R1"}
    # one transaction wrote them all: a single shared updated_at
    assert len({r["updated_at"] for r in rows}) == 1
    # timestamps land as ISO-8601 with an offset, exact to the microsecond
    with psycopg.connect(source_url) as conn:
        stored = dict(conn.execute(f"SELECT id, updated_at FROM {TABLE} WHERE id = ANY(%s)", (list(by_id),)).fetchall())
    assert {i: datetime.fromisoformat(r["updated_at"]) for i, r in by_id.items()} == stored
    assert all(re.fullmatch(ISO_OFFSET_PATTERN, r[c]) for r in rows for c in ("created_at", "updated_at"))

    third = extract_source_db(INGEST)
    assert third["landed"] == 0 and third["parts"] == 0
    assert third["watermark"] == second["watermark"]
    with psycopg.connect(os.environ["FLUXO_DATABASE_URL"]) as conn:
        recorded = conn.execute(
            "SELECT b.counts, w.value FROM extract.batch b JOIN extract.watermark w USING (source, stream)"
            " WHERE b.batch_id = %s", (second["batch_id"],)).fetchone()
    assert recorded[0]["landed"] == 12 and recorded[1] == second["watermark"]


def test_rows_updated_again_land_again_with_their_new_version(source_url, generated, conns):
    seed(source_url, generated)
    extract(conns)
    touched = simulate_activity(source_url, n_updates=4, n_inserts=0)
    with psycopg.connect(source_url) as conn:  # a second change of the same rows, in a later transaction
        conn.execute(f"UPDATE {TABLE} SET amount_cents = amount_cents + 1 WHERE id = ANY(%s)", (touched["updated"],))
        current = dict(conn.execute(f"SELECT id, amount_cents FROM {TABLE} WHERE id = ANY(%s)",
                                    (touched["updated"],)).fetchall())
    rows = landed_rows(extract(conns))
    assert sorted(int(r["id"]) for r in rows) == sorted(touched["updated"])  # exactly once each
    assert {int(r["id"]): int(r["amount_cents"]) for r in rows} == current


def test_ties_across_batch_boundaries_land_once(source_url, generated, conns):
    seed(source_url, generated)
    extract(conns)
    touched = simulate_activity(source_url, n_updates=9, n_inserts=14, same_timestamp=True)
    ids, runs = [], []
    while True:
        counts = extract(conns, max_rows=5, part_rows=2)
        if not counts["landed"]:
            break
        assert counts["parts"] == -(-counts["landed"] // 2)
        rows = landed_rows(counts)
        assert len({r["updated_at"] for r in rows}) == 1  # every cut falls inside one updated_at
        ids += [int(r["id"]) for r in rows]
        runs.append(counts)
    assert len(runs) == 5
    assert sorted(ids) == sorted(touched["updated"] + touched["inserted"])


def test_late_commit_is_landed(source_url, generated, conns):
    seed(source_url, generated)
    extract(conns)
    with late_commit(source_url, 3) as late:
        touched = simulate_activity(source_url, n_updates=2, n_inserts=2)
        with psycopg.connect(source_url) as conn:
            newer = conn.execute(f"SELECT min(updated_at) FROM {TABLE} WHERE id = ANY(%s)",
                                 (touched["updated"] + touched["inserted"],)).fetchone()[0]
        assert late["updated_at"] < newer  # it will commit behind rows that are already visible
        during = extract(conns)
        # the open transaction holds the horizon: the committed rows wait instead of
        # moving the watermark past the late rows
        assert during["landed"] == 0 and during["held_back"] == 4
    after = extract(conns)
    assert sorted(landed_ids(after)) == sorted(late["ids"] + touched["updated"] + touched["inserted"])
    assert after["held_back"] == 0
    assert extract(conns)["landed"] == 0


def test_rolled_back_writes_never_land(source_url, generated, conns):
    seed(source_url, generated)
    extract(conns)
    with pytest.raises(RuntimeError), late_commit(source_url, 3):
        raise RuntimeError("the application gives up")
    assert extract(conns)["landed"] == 0


HOSTILE = [
    {"customer_id": "'; DROP TABLE payments.card_transaction; --", "merchant_id": 'M"1";x', "mcc": "",
     "amount_cents": 9_223_372_036_854_775_807, "card_last4": None},
    {"customer_id": "line one\nline two\r\nthree", "merchant_id": "semi;colon,comma", "mcc": "\\N",
     "amount_cents": -1, "card_last4": ""},
    {"customer_id": "x" * 1_000_000, "merchant_id": "Ünïcødé ção 💳", "mcc": "NULL",
     "amount_cents": 0, "card_last4": '"'},
]


def test_hostile_rows_land_losslessly(source_url, conns):
    with psycopg.connect(source_url) as conn:
        for row in HOSTILE:
            conn.execute(
                f"INSERT INTO {TABLE} (txn_uuid, customer_id, card_token, card_last4, merchant_id, mcc, amount_cents,"
                " currency, country, channel_code, status_code)"
                " VALUES (gen_random_uuid(), %(customer_id)s, 'tok_x', %(card_last4)s, %(merchant_id)s, %(mcc)s,"
                " %(amount_cents)s, 'BRL', 'BR', 'POS', '00')", row)
    counts = extract(conns, part_rows=2)
    assert counts["landed"] == 3 and counts["parts"] == 2 and counts["quarantined"] == 0

    parsed = sorted(landed_rows(counts), key=lambda r: int(r["id"]))
    for got, want in zip(parsed, HOSTILE):
        assert got["customer_id"] == want["customer_id"] and got["merchant_id"] == want["merchant_id"]
        assert int(got["amount_cents"]) == want["amount_cents"] and got["mcc"] == want["mcc"]

    # PostgreSQL reads the landed files back into exactly the table's rows, NULL and '' included
    raw = Path(Lake(os.environ["FLUXO_LAKE_ROOT"]).raw("db", INGEST, counts["batch_id"]))
    source = conns[0]
    use_output_format(source)
    source.execute(f"CREATE TEMP TABLE landed AS SELECT {select_list()} FROM {TABLE} LIMIT 0")
    with source.cursor() as cur:
        for part in sorted(raw.glob("part-*.csv")):
            with cur.copy("COPY landed FROM STDIN WITH (FORMAT csv, HEADER)") as copy:
                copy.write(part.read_bytes())
    differences = source.execute(
        f"SELECT count(*) FROM ((SELECT * FROM landed EXCEPT ALL SELECT {select_list()} FROM {TABLE})"
        f" UNION ALL (SELECT {select_list()} FROM {TABLE} EXCEPT ALL SELECT * FROM landed)) AS d").fetchone()[0]
    nulls = source.execute("SELECT count(*) FILTER (WHERE card_last4 IS NULL), count(*) FILTER (WHERE card_last4 = '')"
                           " FROM landed").fetchone()
    source.rollback()
    assert differences == 0 and nulls == (1, 1)


def test_hidden_sessions_stop_the_run_instead_of_guessing(source_url, warehouse_url, stack_env):
    role = "fluxo_db_extract_test"
    with psycopg.connect(source_url, autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'development-only'")
        admin.execute(f"GRANT USAGE ON SCHEMA payments TO {role}; GRANT SELECT ON {TABLE} TO {role}")
    limited = psycopg.conninfo.make_conninfo(source_url, user=role, password="development-only")
    try:
        with late_commit(source_url, 0), psycopg.connect(limited) as source, \
                psycopg.connect(warehouse_url) as state:
            with pytest.raises(PermissionError, match="pg_read_all_stats"):
                extract_source_db(INGEST, source_conn=source, state_conn=state)
    finally:
        with psycopg.connect(source_url, autocommit=True) as admin:
            admin.execute(f"REVOKE ALL ON {TABLE} FROM {role}; REVOKE ALL ON SCHEMA payments FROM {role}")
            admin.execute(f"DROP ROLE {role}")


def test_cli_and_simulated_late_commit(source_url, generated, conns, capsys):
    from fluxo_dev.source_db.__main__ import main

    main(["--url", source_url, "seed", str(generated), "--days", str(DAY)])
    main(["--url", source_url, "activity", "--updates", "2", "--inserts", "1", "--spread"])
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()][1] == \
        {"updated": 2, "inserted": 1, "late_updated": 0}
    extract(conns)
    touched = simulate_activity(source_url, n_updates=3, n_inserts=2, same_timestamp=False, late_updates=2)
    rows = {int(r["id"]): r for r in landed_rows(extract(conns))}
    assert sorted(rows) == sorted(touched["updated"] + touched["inserted"] + touched["late_updated"])
    on_time = [datetime.fromisoformat(rows[i]["updated_at"]) for i in touched["updated"] + touched["inserted"]]
    assert len(set(on_time)) == 5  # one transaction per row: no shared timestamp
    # committed last, stamped first
    assert max(datetime.fromisoformat(rows[i]["updated_at"]) for i in touched["late_updated"]) < min(on_time)


# (customer_id, merchant_id, status_code, expected outcome): line breaks, quotes and delimiters inside values
MULTI_LINE = [
    ("C-ml-1", "LOJA\nNOVA", "00", "staged"),
    ('say "hi", bye', "M;1,2", "05", "staged"),
    ("line one\r\nline two", '"quoted"\n\n,x', "00", "staged"),
    ("C-ml-4", "LOJA\nVELHA, \"3\"", "99", "invalid_value:status"),
]


def test_multi_line_values_stay_one_record_through_standardize(source_url, conns, spark):
    """Extract from the real OLTP, then standardize the landed COPY files: each row is one record
    (the same count extract landed), values intact, a quarantined record kept whole."""
    from fluxo.transforms.standardize import load_fx_rates, map_raw_day, standardize, standardize_stats

    with psycopg.connect(source_url) as conn:
        for customer, merchant, status, _ in MULTI_LINE:
            conn.execute(
                f"INSERT INTO {TABLE} (txn_uuid, customer_id, card_token, card_last4, merchant_id, mcc, amount_cents,"
                " currency, country, channel_code, status_code)"
                " VALUES (gen_random_uuid(), %s, 'tok_ml', '1234', %s, '5411', 1050, 'BRL', 'BR', 'POS', %s)",
                (customer, merchant, status))
    counts = extract(conns, part_rows=3)
    assert counts["landed"] == len(MULTI_LINE) and counts["parts"] == 2
    raw = Path(Lake(os.environ["FLUXO_LAKE_ROOT"]).raw("db", INGEST, counts["batch_id"]))
    out = standardize(map_raw_day(spark, {"db": [str(p) for p in sorted(raw.glob("part-*.csv"))]}),
                      load_fx_rates(spark), token_salt="s")
    checked = out.checked.collect()
    stats = standardize_stats(out.checked)
    assert stats["read"] == counts["landed"] and stats["by_source"]["db"]["read"] == counts["landed"]
    by_customer = {r["customer_id"]: r for r in checked}
    for customer, merchant, _, outcome in MULTI_LINE:
        row = by_customer[customer]
        assert (row["reason"] or "staged") == outcome, (customer, row["reason"])
        assert row["merchant_id"] == merchant and row["batch_id"] == counts["batch_id"] and row["source"] == "db"
        assert row["source_file"].endswith(".csv") and row["ingested_at"] is not None
    (bad,) = out.quarantine.collect()
    # the whole logical record, as CSV: its quoted merchant_id still holds the line break
    assert bad["raw_record"].count("\n") == 1 and '"LOJA\nVELHA, ""3"""' in bad["raw_record"]
    assert bad["raw_record"].split(",")[1] == by_customer["C-ml-4"]["transaction_id"]
