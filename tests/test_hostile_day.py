"""A day full of card numbers in every shape, through `transactions_etl` on the real local services:
afterwards no PAN is readable anywhere past the raw zone — lake zones (quarantine, work, curated,
history, quality and its Data Docs), the warehouse, Airflow's metadata database and the task logs.

The day: the generator's four sources with raw PANs in the card field of 5% of the records, plus
hand-made records that put PANs where they do not belong, in every shape (bare, spaced, dashed,
Amex 4-6-5, 19 digits) and every place a source allows: identifiers, amounts, a multi-line OLTP
value, malformed lines and API elements, a Kafka value that is not UTF-8, a truncated gzip and a
misnamed non-gzip file in the landing bucket.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
from datetime import date
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from fluxo.tokenize import has_pan, mask_pans
from fluxo_dev.stack.airflow import metadata_database_url
from tests.conftest import AIRFLOW_BIN, reset_sources

DAY = date(2026, 11, 12)
PANS = ["4111111111111111", "5555 5555 5555 4444", "4111-1111-1111-1111", "3782 822463 10005",
        "4111111111111111110", "6011 0009 9013 9424"]
# Not card numbers: card tokens (hashes), the fraction digits of a decimal number (0.8888888888888888)
# and epoch milliseconds (13 digits from 1: Delta's and Kafka's timestamps; no 13-digit PAN starts with 1).
NOT_PANS = re.compile(r"tok_[A-Za-z0-9_-]+|(?<=[0-9])\.[0-9]+|(?<![0-9])1[0-9]{12}(?![0-9])")


def csv_row(tid, customer="C000001", card="tok_x", merchant="M00001", amount="10,00", last4="1234"):
    return ";".join([tid, "12/11/2026 10:00:00", customer, card, last4, merchant, "5411", amount, "BRL", "BR",
                     "presencial", "aprovada"])


def api_record(tid, **over):
    record = {"transaction_id": tid, "created_at": "2026-11-12T13:00:00Z", "updated_at": "2026-11-12T23:59:00Z",
              "customer_id": "C000002", "card": {"token": "tok_y", "last4": "4444"}, "merchant_id": "M00002",
              "mcc": "5812", "amount": 12.5, "currency": "BRL", "country": "BR", "channel": "ecommerce",
              "status": "approved"}
    record.update(over)
    return record


def add_hostile_records(out: Path) -> list[bytes]:
    """Write the hand-made records beside the generated day; returns the Kafka values to send."""
    s3 = out / "s3" / f"dt={DAY}"
    header = "id_transacao;data_hora;cliente;cartao;cartao_final;estabelecimento;mcc;valor;moeda;pais;canal;status"
    (s3 / "pans.csv").write_text("\n".join([
        header,
        csv_row("pan-ok-1", card=PANS[0], last4=""),  # staged, tokenized
        csv_row("pan-card-dashed", card=PANS[2]),  # invalid_value:card_token
        csv_row("pan-card-spaced", card=PANS[1]),  # invalid_value:card_token
        csv_row("pan-customer", customer=PANS[3]),  # pan_in_field:customer_id
        csv_row("pan-merchant", merchant=f"LOJA {PANS[5]}"),  # pan_in_field:merchant_id
        csv_row(PANS[4]),  # pan_in_field:transaction_id
        csv_row("pan-amount", amount=PANS[0]),  # out_of_range:amount_reporting
        f"pan-short;{PANS[1]};{PANS[2]}",  # malformed_record
    ]) + "\n", encoding="utf-8")
    (s3 / "pans.jsonl").write_text("\n".join([
        json.dumps({"id": "pan-j-19", "occurred_at": "2026-11-12T10:00:00-03:00", "customer": {"id": "C000003"},
                    "card": {"number": PANS[4]}, "merchant": {"id": "M00003", "mcc": "5411", "country": "BR"},
                    "amount": {"value": "5.00", "currency": "BRL"}, "channel": "ecommerce", "status": "approved"}),
        json.dumps({"id": "pan-j-cust", "occurred_at": "2026-11-12T10:00:00-03:00", "customer": {"id": PANS[2]},
                    "card": {"token": "tok_z"}, "merchant": {"id": "M00003", "mcc": "5411", "country": "BR"},
                    "amount": {"value": "5.00", "currency": "BRL"}, "channel": "ecommerce", "status": "approved"}),
        '{"id": "pan-j-broken", "card": {"number": "' + PANS[1] + '"',
    ]) + "\n", encoding="utf-8")
    lines = "".join(f'{{"id": "pan-gz-{i}", "card": {{"number": "{PANS[i % 3]}"}}}}\n' for i in range(200))
    whole = gzip.compress(lines.encode())
    (s3 / "pans-truncated.jsonl.gz").write_bytes(whole[: len(whole) * 2 // 3])  # unreadable_file at extract
    (s3 / "pans-not-gzip.csv.gz").write_text(header + "\n" + csv_row("pan-nogz", customer=PANS[0]) + "\n")

    page = {"data": [
        api_record("pan-a-cust", customer_id=PANS[1]),  # pan_in_field:customer_id
        api_record("pan-a-card", card={"token": PANS[2], "last4": None}),  # invalid_value:card_token
        api_record(PANS[0], card={"number": PANS[5].replace(" ", "")}),  # pan_in_field:transaction_id
        json.dumps(api_record("pan-a-string", customer_id=PANS[0])),  # a JSON string: malformed at extract
    ], "next_cursor": None}
    (out / "api" / f"dt={DAY}" / "page-9999.json").write_text(json.dumps(page), encoding="utf-8")

    def event(tid, **over):
        return json.dumps({"event_id": f"ev-{tid}", "event_type": "transaction.authorized",
                           "produced_at": "2026-11-12T13:00:01Z", "payload": api_record(tid, **over)})

    return [
        event("pan-k-cust", customer_id=PANS[3]).encode(),  # pan_in_field:customer_id
        event("pan-k-merch", merchant_id=f"M-{PANS[0]}").encode(),  # pan_in_field:merchant_id
        ('{"event_id": "ev-pan-k-cut", "payload": {"card": {"number": "' + PANS[0] + '"}, "transaction_id": "pan-k'
         ).encode(),  # cut after the PAN: malformed
        f'{{"payload": {{"customer_id": "Jos\xe9 {PANS[0]}"}}}}'.encode("latin-1"),  # not UTF-8: quarantined at extract
    ]


DB_ROWS = [  # (customer_id, card_token, merchant_id, amount_cents)
    ("C000004", PANS[0], "M00004", 1500),  # staged, tokenized
    ("C000004", PANS[2], "M00004", 1500),  # invalid_value:card_token
    (PANS[3], "tok_d", "M00004", 1500),  # pan_in_field:customer_id
    ("C000004", "tok_d", f"LOJA\n{PANS[1]}", 1500),  # pan_in_field:merchant_id, a multi-line value
    ("C000004", "tok_d", "M00004", int(PANS[0])),  # out_of_range:amount_reporting
]


@pytest.fixture(scope="module")
def hostile_run(stack_env, warehouse_url, airflow_env, tmp_path_factory):
    from confluent_kafka import Producer

    from fluxo_dev.generator import generate, upload_landing
    from fluxo_dev.simulator import start_simulator
    from fluxo_dev.source_db import TABLE, seed
    from fluxo_dev.streaming import produce
    from fluxo_dev.streaming.producer import DEFAULT_TOPIC, producer_config

    reset_sources(stack_env, warehouse_url)

    out = tmp_path_factory.mktemp("hostile-day")
    generate(out, DAY, days=1, rows_per_day=1000, seed=23, defect_rates={"raw_pan": 0.05})
    kafka_values = add_hostile_records(out)
    upload_landing(out, [DAY])
    seed(stack_env["FLUXO_SOURCE_DATABASE_URL"], out, [DAY])
    with psycopg.connect(stack_env["FLUXO_SOURCE_DATABASE_URL"]) as conn:
        for customer, card, merchant, cents in DB_ROWS:
            conn.execute(
                f"INSERT INTO {TABLE} (txn_uuid, customer_id, card_token, card_last4, merchant_id, mcc, amount_cents,"
                " currency, country, channel_code, status_code, created_at) VALUES (gen_random_uuid(), %s, %s, NULL,"
                " %s, '5411', %s, 'BRL', 'BR', 'POS', '00', '2026-11-12T12:00:00Z')", (customer, card, merchant, cents))
    produce(out, stack_env["FLUXO_KAFKA_BOOTSTRAP"])
    producer = Producer(producer_config(stack_env["FLUXO_KAFKA_BOOTSTRAP"]))
    for value in kafka_values:
        producer.produce(DEFAULT_TOPIC, value=value)
    assert producer.flush(30) == 0

    # The databases are shared with the session's other tests (the API tests' fuzzed requests are
    # in audit.api_access): what the day must not add is judged against what was there before.
    before = {url: set(database_findings(url)[0]) for url in (warehouse_url, metadata_database_url(airflow_env))}
    lake = tmp_path_factory.mktemp("hostile-lake")
    with start_simulator(out) as partner_api:
        env = {**airflow_env, "FLUXO_LAKE_ROOT": str(lake), "AIRFLOW_CONN_FLUXO_PARTNER_API": partner_api.connection_uri()}
        proc = subprocess.run([str(AIRFLOW_BIN), "dags", "test", "transactions_etl", DAY.isoformat()],
                              env=env, capture_output=True, text=True, timeout=900)
    return {"proc": proc, "lake": lake, "env": env, "findings_before": before}


def findings(text: str, where: str) -> list[str]:
    """Where text holds a PAN-shaped sequence (shown masked), card tokens aside."""
    text = NOT_PANS.sub(" ", text)
    return [f"{where}: {mask_pans(line)[:200]}" for line in text.splitlines() if has_pan(line)]


def delta_log_text(path: Path) -> str:
    """A Delta commit as text, without the engine's own operation metrics and plan predicates
    (counters, timings and expression ids, whose digit runs can look like card numbers); the
    data-derived parts (file stats, partition values, user metadata) are all kept."""
    actions = []
    for line in path.read_text(encoding="utf-8").splitlines():
        action = json.loads(line)
        for key in ("operationMetrics", "operationParameters"):
            action.get("commitInfo", {}).pop(key, None)
        actions.append(json.dumps(action))
    return "\n".join(actions)


def lake_findings(root: Path) -> tuple[list[str], int]:
    found, scanned = [], 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative.startswith("raw/") or path.suffix == ".crc":
            continue
        scanned += 1
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            for name in table.column_names:
                if str(table.schema.field(name).type) in ("string", "large_string"):
                    values = "\n".join(v for v in table.column(name).to_pylist() if v)
                    found += findings(values, f"{relative}:{name}")
        elif "_delta_log/" in relative and path.suffix == ".json":
            found += findings(delta_log_text(path), relative)
        else:
            found += findings(path.read_bytes().decode("utf-8", errors="replace"), relative)
    return found, scanned


def database_findings(url: str, schemas_except=("pg_catalog", "information_schema", "pg_toast")) -> tuple[list[str], int]:
    found, scanned = [], 0
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            " AND table_schema <> ALL(%s)", (list(schemas_except),)).fetchall()
        for schema, table in tables:
            rows = conn.execute(f'SELECT t::text FROM "{schema}"."{table}" t').fetchall()
            scanned += len(rows)
            found += findings("\n".join(r[0] for r in rows), f"{schema}.{table}")
    return found, scanned


def test_the_day_ran_and_its_raw_zone_holds_the_pans(hostile_run):
    proc = hostile_run["proc"]
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    raw = "\n".join(p.read_bytes().decode("latin-1") for p in (hostile_run["lake"] / "raw").rglob("*") if p.is_file()
                    and not p.name.endswith(".gz"))
    assert all(pan in raw for pan in PANS), "the day must really carry every PAN shape into raw"
    reasons = json.loads((hostile_run["lake"] / "work" / "stats" / f"ingest_date={DAY}" / "standardize.json")
                         .read_text())["quarantine_by_reason"]
    assert {"pan_in_field:customer_id", "pan_in_field:merchant_id", "pan_in_field:transaction_id",
            "invalid_value:card_token", "out_of_range:amount_reporting", "malformed_record"} <= set(reasons)


def test_no_pan_in_any_lake_zone_past_raw(hostile_run):
    found, scanned = lake_findings(hostile_run["lake"])
    zones = {p.relative_to(hostile_run["lake"]).parts[0] for p in hostile_run["lake"].iterdir()}
    assert {"quarantine", "work", "curated", "history", "quality"} <= zones
    assert scanned > 20 and not found, found[:10]
    rendered = list((hostile_run["lake"] / "quarantine").rglob("*.masked.txt"))
    assert len(rendered) == 2 and any("<pan ****" in p.read_text() for p in rendered)
    assert (hostile_run["lake"] / "quality" / "data_docs" / "index.html").is_file()


def test_no_pan_in_the_warehouse_or_airflow_metadata(hostile_run):
    env, before = hostile_run["env"], hostile_run["findings_before"]
    for url, least in ((env["FLUXO_DATABASE_URL"], 50), (metadata_database_url(env), 1)):
        found, scanned = database_findings(url)
        added = [f for f in found if f not in before[url]]
        assert scanned >= least and not added, added[:10]


def test_no_pan_in_the_task_logs(hostile_run):
    proc, env = hostile_run["proc"], hostile_run["env"]
    found = findings(proc.stdout, "stdout") + findings(proc.stderr, "stderr")
    logs = Path(env["AIRFLOW_HOME"]) / "logs"
    for path in (p for p in logs.rglob("*") if p.is_file()) if logs.exists() else []:
        found += findings(path.read_text(errors="replace"), str(path.relative_to(logs)))
    assert "standardize" in proc.stdout + proc.stderr and not found, found[:10]
