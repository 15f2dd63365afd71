"""standardize on crafted raw lines: every s3 quirk and defect kind of docs/source-formats.md."""

from __future__ import annotations

import collections
import hashlib
import json
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from fluxo.contract import QUARANTINE, TRANSACTION
from fluxo.transforms.standardize import (
    S3_CSV_HEADER,
    load_fx_rates,
    map_s3,
    read_lines,
    standardize,
    standardize_stats,
)

SALT = "test-salt"
LANDED = datetime(2026, 11, 26, 23, 0, 0, tzinfo=timezone.utc)
LATER = datetime(2026, 11, 27, 1, 0, 0, tzinfo=timezone.utc)
CSV_B1 = "file:/lake/raw/s3/ingest_date=2026-11-26/batch=b1/acquirer.csv"
CSV_B0 = "file:/lake/raw/s3/ingest_date=2026-11-26/batch=b0/acquirer.csv"
JSON_B1 = "file:/lake/raw/s3/ingest_date=2026-11-26/batch=b1/gateway.jsonl"
JSON_B2 = "file:/lake/raw/s3/ingest_date=2026-11-26/batch=b2/gateway.jsonl"
PAN = "4111111111111111"


def csv_line(tid, ts="26/11/2026 14:03:22", customer="C1", card="tok_abc123", last4="1234", merchant="M1",
             mcc="5411", amount="1.234,56", currency="brl", country="br", channel="Presencial", status="aprovada"):
    return ";".join([tid, ts, customer, card, last4, merchant, mcc, amount, currency, country, channel, status])


def json_line(tid, occurred="2026-11-26T14:03:22-03:00", amount="123.45", currency="BRL", card=None, drop=(), **top):
    doc = {
        "id": tid,
        "occurred_at": occurred,
        "customer": {"id": "C9"},
        "card": card or {"token": "tok_j", "last4": "4242"},
        "merchant": {"id": "M9", "mcc": "5999", "country": "BR"},
        "amount": {"value": amount, "currency": currency},
        "channel": top.get("channel", "ecommerce"),
        "status": top.get("status", "APPROVED"),
    }
    for key in drop:
        doc.pop(key)
    return json.dumps(doc)


# (file, line, ingested_at, expected outcome: reason code | "staged" | "duplicate")
CSV_CASES = [
    (CSV_B1, S3_CSV_HEADER, None),  # header: not a read row
    (CSV_B1, csv_line("c-ok"), "duplicate"),  # same copy landed in batch b0 below
    (CSV_B1, csv_line("c-pan", ts="26/11/2026 10:00:00", card=PAN, last4="", amount="87,90",
                      currency="USD", country="us", channel="ONLINE", status="Negada"), "staged"),
    (CSV_B1, csv_line("c-eur", amount="12000,00", currency="eur", channel="loja", status="ESTORNADA"), "staged"),
    (CSV_B1, csv_line("c-mil", amount="1.000.000,5", channel="App", status="00"), "staged"),
    (CSV_B1, '"c-quoted";"26/11/2026 09:00:00";"C;1";"tok_q";"";"M1";"5411";"1,00";"BRL";"BR";"web";"ok"', "staged"),
    (CSV_B1, csv_line("c-feb31", ts="31/02/2026 10:00:00"), "invalid_timestamp"),
    (CSV_B1, csv_line("c-shortdate", ts="26/11/2026 10:00"), "invalid_timestamp"),
    (CSV_B1, "c-short;26/11/2026 10:00:00;C6", "malformed_record"),
    (CSV_B1, csv_line("c-long") + ";extra", "malformed_record"),
    (CSV_B1, "", "malformed_record"),
    (CSV_B1, csv_line("c-nocust", customer=""), "missing_required:customer_id"),
    (CSV_B1, csv_line("", customer=""), "missing_required:transaction_id"),
    (CSV_B1, csv_line("c-noamt-badchan", amount=" ", channel="drone"), "missing_required:amount"),
    (CSV_B1, csv_line("c-usamount", amount="12.34"), "invalid_amount"),
    (CSV_B1, csv_line("c-badamt-baddate", amount="abc", ts="99/99/2026 10:00:00"), "invalid_amount"),
    (CSV_B1, csv_line("c-zero", amount="0,00"), "non_positive_amount"),
    (CSV_B1, csv_line("c-neg", amount="-5,00"), "non_positive_amount"),
    (CSV_B1, csv_line("c-future", ts="28/11/2026 10:00:00"), "future_event_ts"),
    (CSV_B1, csv_line("c-chan", channel="drone"), "invalid_value:channel"),
    (CSV_B1, csv_line("c-status", status="pending"), "invalid_value:status"),
    (CSV_B1, csv_line("c-cur", currency="XYZ"), "invalid_value:currency"),
    (CSV_B1, csv_line("c-country", country="BRA"), "invalid_value:country"),
    (CSV_B1, csv_line("c-mcc", mcc="54A1"), "invalid_value:mcc"),
    (CSV_B1, csv_line("c-card", card="4111-1111"), "invalid_value:card_token"),
    (CSV_B1, csv_line("c-last4", last4="12"), "invalid_value:card_last4"),
    (CSV_B1, csv_line("c-pan-bad", card=PAN, last4="", status="??"), "invalid_value:status"),
    # the same transaction landed twice: the copy from the smaller batch wins the tie
    (CSV_B0, csv_line("c-ok"), "staged"),
]
JSON_CASES = [
    (JSON_B1, json_line("j-ok"), "staged"),
    (JSON_B1, json_line("j-z", occurred="2026-11-26T10:00:00Z", amount=10.5, currency="eur",
                        card={"number": PAN}, channel="Card_Present", status="recusada"), "staged"),
    (JSON_B1, json_line("j-plus", occurred="2026-11-26T10:00:00.250+01:00", amount=99), "staged"),
    (JSON_B1, '{"id": "j-broken", "occurred_at": ', "malformed_record"),
    (JSON_B1, "[1, 2]", "malformed_record"),
    (JSON_B1, json_line("j-nots", drop=("occurred_at",)), "missing_required:event_ts"),
    (JSON_B1, json_line("j-nocard", card={"last4": "1111"}), "missing_required:card_token"),
    (JSON_B1, json_line("j-naive", occurred="2026-11-26T10:00:00"), "invalid_timestamp"),
    (JSON_B1, json_line("j-brnum", amount="12,50"), "invalid_amount"),
    (JSON_B1, json_line("j-mills", amount="1.005"), "invalid_amount"),
    (JSON_B1, json_line("j-bool", amount=True), "invalid_amount"),
    (JSON_B1, json_line("j-future", occurred="2026-11-27T00:00:00+00:00"), "future_event_ts"),
    # redelivered later: the earliest landed copy wins
    (JSON_B2, json_line("j-ok"), "duplicate"),
]


@pytest.fixture(scope="module")
def result(spark):
    def lines(cases):
        rows = [(line, path, LATER if path == JSON_B2 else LANDED) for path, line, _ in cases]
        return spark.createDataFrame(rows, "value string, source_file string, ingested_at timestamp")

    candidates = map_s3(lines(CSV_CASES), lines(JSON_CASES), default_batch_id="run-1")
    out = standardize(candidates, load_fx_rates(spark), reporting_currency="BRL", token_salt=SALT)
    checked = out.checked.cache()
    return {
        "out": out,
        "staged": {r["transaction_id"]: r for r in out.staged.collect()},
        "quarantine": out.quarantine.collect(),
        "checked": checked.collect(),
        "stats": standardize_stats(checked),
    }


def expected_token(pan: str, salt: str = SALT) -> str:
    return "tok_" + hashlib.sha256((salt + pan).encode()).hexdigest()[:32]


def test_every_case_has_the_expected_outcome(result):
    outcome = {}
    for r in result["checked"]:
        outcome[(r["source_file"], r["raw_record"])] = r["reason"] or ("duplicate" if r["_duplicate"] else "staged")
    for path, line, want in CSV_CASES + JSON_CASES:
        if want is not None:
            assert outcome.get((path, line)) == want, line


def test_outputs_follow_the_contracts(result):
    out = result["out"]
    assert [(f.name, f.dataType) for f in out.staged.schema.fields] == [
        (f.name, f.dataType) for f in TRANSACTION.spark_schema().fields
    ]
    assert out.quarantine.columns == QUARANTINE.names


def test_every_read_line_is_accounted(result):
    stats = result["stats"]
    cases = [c for c in CSV_CASES + JSON_CASES if c[2] is not None]
    assert stats["read"] == len(cases)
    assert stats["read"] == stats["staged"] + stats["quarantined"] + stats["duplicates_dropped"]
    assert stats["staged"] == len(result["staged"]) == 8
    assert stats["duplicates_dropped"] == 2
    assert stats["quarantine_by_reason"]["malformed_record"] == 5
    assert stats["quarantined"] == len(result["quarantine"])


def test_brazilian_csv_values_are_converted(result):
    ok = result["staged"]["c-ok"]
    assert ok["event_ts"] == datetime(2026, 11, 26, 17, 3, 22)  # São Paulo is UTC-3
    assert ok["amount"] == Decimal("1234.56") and ok["amount_reporting"] == Decimal("1234.56")
    assert (ok["currency"], ok["country"], ok["channel"], ok["status"]) == ("BRL", "BR", "pos", "approved")
    assert (ok["source"], ok["batch_id"], ok["card_last4"]) == ("s3", "b0", "1234")
    eur = result["staged"]["c-eur"]
    assert (eur["amount"], eur["amount_reporting"]) == (Decimal("12000.00"), Decimal("69600.00"))
    assert (eur["channel"], eur["status"]) == ("pos", "reversed")
    mil = result["staged"]["c-mil"]
    assert (mil["amount"], mil["channel"], mil["status"]) == (Decimal("1000000.50"), "mobile", "approved")
    quoted = result["staged"]["c-quoted"]
    assert (quoted["customer_id"], quoted["card_last4"], quoted["channel"]) == ("C;1", None, "ecommerce")


def test_raw_pan_is_tokenized_and_fx_rounds_half_up(result):
    pan_row = result["staged"]["c-pan"]
    assert pan_row["card_token"] == expected_token(PAN)
    assert pan_row["card_last4"] == "1111"
    # 87.90 USD x 5.35 = 470.265 -> 470.27 (half up)
    assert pan_row["amount_reporting"] == Decimal("470.27")
    assert (pan_row["channel"], pan_row["status"]) == ("ecommerce", "declined")
    j = result["staged"]["j-z"]
    assert j["card_token"] == expected_token(PAN) and j["card_last4"] == "1111"
    assert (j["amount"], j["currency"], j["amount_reporting"]) == (Decimal("10.50"), "EUR", Decimal("60.90"))


def test_json_offsets_become_utc(result):
    staged = result["staged"]
    assert staged["j-ok"]["event_ts"] == datetime(2026, 11, 26, 17, 3, 22)
    assert staged["j-ok"]["ingested_at"] == LANDED.replace(tzinfo=None)
    assert staged["j-z"]["event_ts"] == datetime(2026, 11, 26, 10, 0, 0)
    assert staged["j-plus"]["event_ts"] == datetime(2026, 11, 26, 9, 0, 0, 250000)
    assert staged["j-plus"]["amount"] == Decimal("99.00")


def test_quarantine_keeps_raw_record_without_pans(result):
    rows = result["quarantine"]
    by_reason = {}
    for r in rows:
        by_reason.setdefault(r["reason"], []).append(r)
    short = by_reason["malformed_record"]
    assert any(r["raw_record"] == "c-short;26/11/2026 10:00:00;C6" for r in short)
    assert all(r["source"] == "s3" and r["quarantined_at"] is not None for r in rows)
    assert {r["batch_id"] for r in rows} == {"b1"}
    assert all(PAN not in (r["raw_record"] or "") for r in rows)
    (pan_row,) = [r for r in by_reason["invalid_value:status"] if r["raw_record"].startswith("c-pan-bad;")]
    assert pan_row["raw_record"] == csv_line("c-pan-bad", card="<pan ****1111>", last4="", status="??")


def test_reporting_currency_other_than_brl(spark):
    lines = spark.createDataFrame(
        [(csv_line("u1"), CSV_B1, LANDED)], "value string, source_file string, ingested_at timestamp"
    )
    out = standardize(map_s3(lines, None), load_fx_rates(spark), reporting_currency="USD", token_salt=SALT)
    (row,) = out.staged.collect()
    assert row["amount_reporting"] == Decimal("230.76")  # 1234.56 / 5.35 = 230.7588...


def test_missing_fx_rate_is_a_clear_error(spark):
    fx = spark.createDataFrame([("BRL", Decimal("1"))], "currency string, rate_to_brl decimal(20,10)")
    lines = spark.createDataFrame([(csv_line("u1"), CSV_B1, LANDED)], "value string, source_file string, ingested_at timestamp")
    with pytest.raises(ValueError, match="FX rates missing"):
        standardize(map_s3(lines, None), fx, token_salt=SALT)


def test_spark_token_matches_python_tokenize(result):
    tokenize = pytest.importorskip("fluxo.tokenize")
    python_token = getattr(tokenize, "tokenize_pan", None) or tokenize.card_token
    assert result["staged"]["c-pan"]["card_token"] == python_token(PAN, SALT)


def test_generator_day_matches_its_labels_and_truth(spark, tmp_path):
    """Contract with fluxo.generator: every planted defect gets exactly the labelled reason and
    every valid transaction stages with the ground-truth canonical values."""
    generator = pytest.importorskip("fluxo.generator")
    import pandas as pd

    rates = {"malformed_record": 0.03, "invalid_amount": 0.03, "invalid_timestamp": 0.03, "future_event_ts": 0.02,
             "invalid_value": 0.04, "missing_required": 0.04, "raw_pan": 0.04, "type_drift": 0.04}
    generator.generate(tmp_path, date(2026, 11, 26), 1, 800, seed=11, sources=("s3",), defect_rates=rates,
                       token_salt=SALT)
    files = sorted(str(p) for p in (tmp_path / "s3").rglob("*") if p.is_file())
    candidates = map_s3(
        read_lines(spark, [f for f in files if f.endswith(".csv")]),
        read_lines(spark, [f for f in files if f.endswith(".jsonl")]),
    )
    out = standardize(candidates, load_fx_rates(spark), token_salt=SALT)
    checked = out.checked.cache()

    labels = pd.read_parquet(tmp_path / "labels" / "labels.parquet")
    rows = checked.select("source_file", "raw_record", "reason", "_duplicate").toPandas()
    got = collections.Counter(rows["reason"].dropna())
    want = collections.Counter(labels["expected_reason"].dropna())
    assert got == want and sum(want.values()) > 50
    stats = standardize_stats(checked)
    assert stats["read"] == len(labels)

    truth = pd.read_parquet(tmp_path / "truth" / "transactions.parquet")
    staged = out.staged.toPandas()
    assert sorted(staged["transaction_id"]) == sorted(truth["transaction_id"])
    merged = staged.merge(truth, on="transaction_id", suffixes=("", "_truth"))
    for column in TRANSACTION.names:
        if f"{column}_truth" not in merged:
            continue
        ours, theirs = merged[column], merged[f"{column}_truth"]
        if column == "event_ts":
            ours, theirs = pd.to_datetime(ours, utc=True), pd.to_datetime(theirs, utc=True)
        same = (ours == theirs) | (ours.isna() & theirs.isna())
        assert same.all(), (column, merged.loc[~same, [column, f"{column}_truth"]].head(3))
