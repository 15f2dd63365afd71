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
    parse_br_amount,
    parse_sao_paulo_datetime,
    standardize,
    standardize_stats,
    strict_decimal,
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
    # card numbers outside the card field, or in it with separators: never staged, masked in quarantine
    (CSV_B1, csv_line("c-dashed", card="4111-1111-1111-1111"), "invalid_value:card_token"),
    (CSV_B1, csv_line("c-pan-cust", customer="4111 1111 1111 1111"), "pan_in_field:customer_id"),
    (CSV_B1, csv_line("c-pan-merch", merchant="LOJA-5555555555554444"), "pan_in_field:merchant_id"),
    (CSV_B1, csv_line("c-numeric-cust", customer="1234567812345678"), "staged"),  # 16 digits, not Luhn-valid
    # closed sets from fluxo/reference: well-formed but unassigned codes
    (CSV_B1, csv_line("c-xx", country="XX"), "invalid_value:country"),
    (CSV_B1, csv_line("c-zz", country="zz"), "invalid_value:country"),
    (CSV_B1, csv_line("c-mcc0", mcc="0000"), "invalid_value:mcc"),
    (CSV_B1, csv_line("c-mcc9", mcc="9999"), "invalid_value:mcc"),
    # an ISO 4217 currency the FX table has no rate for
    (CSV_B1, csv_line("c-jpy", currency="JPY"), "no_fx_rate:currency"),
    # rules on the converted amount: 0,50 ARS is 0.0027 BRL, 0.00 after rounding; a decimal shift
    (CSV_B1, csv_line("c-tiny", amount="0,50", currency="ARS"), "non_positive_amount:amount_reporting"),
    (CSV_B1, csv_line("c-absurd", amount="987.654.321.000,00"), "out_of_range:amount_reporting"),
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
    (JSON_B1, json_line("j-tiny", amount="0.80", currency="CLP"), "non_positive_amount:amount_reporting"),
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
    assert stats["staged"] == len(result["staged"]) == 9
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
    masked = {r["raw_record"].split(";")[0]: r["raw_record"] for r in rows}
    assert masked["c-dashed"] == csv_line("c-dashed", card="<pan ****1111>")
    assert masked["c-pan-cust"] == csv_line("c-pan-cust", customer="<pan ****1111>")
    assert masked["c-pan-merch"] == csv_line("c-pan-merch", merchant="LOJA-<pan ****4444>")
    from fluxo.tokenize import has_pan

    assert not any(has_pan(r["raw_record"]) or has_pan(r["source_file"]) for r in rows)


# text -> cents exactly, or None; both the direct cast (<= 2 decimals, <= 16 integer digits as
# written) and the exact decimal path (exponents, trailing zeros, leading zeros) are crossed
PLAIN_AMOUNTS = {"7": "7.00", "+1.50": "1.50", "-0.01": "-0.01", "0.1": "0.10", "1.5e2": "150.00", "1E-2": "0.01",
                 "12.340": "12.34", "12.345": None, "1234567890123456.78": "1234567890123456.78",
                 "12345678901234567.8": None, "123456789012345678": None, "00000000000000000001.5": "1.50",
                 "1.": None, ".5": None, "1,5": None, "": None}
BR_AMOUNTS = {"1.234,56": "1234.56", "87,90": "87.90", "12000,00": "12000.00", "1,230": "1.23", "1,234": None,
              "0,001": None, "-3,5": "-3.50", "9999999999999999,99": "9999999999999999.99",
              "99999999999999999,99": None, "1.2.3": None, "1.23": None, ",5": None, "5,": None, "1e2": None}


@pytest.mark.parametrize("parse, cases", [(strict_decimal, PLAIN_AMOUNTS), (parse_br_amount, BR_AMOUNTS)])
def test_amounts_are_exact_to_the_cent_or_null(spark, parse, cases):
    from pyspark.sql import functions as F

    got = spark.createDataFrame([(t,) for t in cases], "text string").select("text", parse(F.col("text")).alias("v"))
    assert {r.text: r.v for r in got.collect()} == {t: v and Decimal(v) for t, v in cases.items()}


# São Paulo wall clocks, DST gap (2018-11-04 00:xx did not exist) and overlap (2019-02-16 23:xx twice)
# included: the instant is the one Python's zoneinfo gives (fold=0: the earlier offset), or None
SAO_PAULO_TIMES = {"26/11/2026 14:03:22": (2026, 11, 26, 14, 3, 22), "04/11/2018 00:30:00": (2018, 11, 4, 0, 30),
                   "16/02/2019 23:30:00": (2019, 2, 16, 23, 30), "29/02/2024 00:00:00": (2024, 2, 29),
                   "31/02/2026 10:00:00": None, "01/01/2026 24:00:00": None, "1/01/2026 00:00:00": None,
                   "2026-11-26 14:03:22": None}


def test_sao_paulo_wall_clock_is_the_zoneinfo_instant(spark):
    from zoneinfo import ZoneInfo

    from pyspark.sql import functions as F

    def instant(fields):
        local = datetime(*fields, tzinfo=ZoneInfo("America/Sao_Paulo"))
        return local.astimezone(timezone.utc).replace(tzinfo=None)

    got = spark.createDataFrame([(t,) for t in SAO_PAULO_TIMES], "text string").select(
        "text", parse_sao_paulo_datetime(F.col("text")).alias("ts"))
    assert {r.text: r.ts for r in got.collect()} == {t: f and instant(f) for t, f in SAO_PAULO_TIMES.items()}


def test_reporting_currency_other_than_brl(spark):
    lines = spark.createDataFrame(
        [(csv_line("u1"), CSV_B1, LANDED)], "value string, source_file string, ingested_at timestamp"
    )
    out = standardize(map_s3(lines, None), load_fx_rates(spark), reporting_currency="USD", token_salt=SALT)
    (row,) = out.staged.collect()
    assert row["amount_reporting"] == Decimal("230.76")  # 1234.56 / 5.35 = 230.7588...


def test_fx_table_errors_stop_the_stage_and_a_currency_without_rate_is_quarantined(spark):
    def fx(*rows):
        return spark.createDataFrame([(c, Decimal(r)) for c, r in rows], "currency string, rate_to_brl decimal(20,10)")

    lines = spark.createDataFrame(
        [(csv_line("u1"), CSV_B1, LANDED), (csv_line("u2", currency="usd"), CSV_B1, LANDED)],
        "value string, source_file string, ingested_at timestamp",
    )
    with pytest.raises(ValueError, match=r"FX rates missing or zero for \['USD'\]"):
        standardize(map_s3(lines, None), fx(("BRL", "1")), reporting_currency="USD", token_salt=SALT)
    with pytest.raises(ValueError, match=r"not ISO 4217 currencies: \['R\$'\]"):
        standardize(map_s3(lines, None), fx(("BRL", "1"), ("R$", "1")), token_salt=SALT)
    out = standardize(map_s3(lines, None), fx(("BRL", "1")), token_salt=SALT)
    assert {r["transaction_id"]: r["reason"] for r in out.checked.collect()} == {"u1": None, "u2": "no_fx_rate:currency"}


def test_spark_token_matches_python_tokenize(result):
    tokenize = pytest.importorskip("fluxo.tokenize")
    python_token = getattr(tokenize, "tokenize_pan", None) or tokenize.card_token
    assert result["staged"]["c-pan"]["card_token"] == python_token(PAN, SALT)


def generator_to_raw(gen_dir, lake_root, day: str, batch: str = "g1") -> dict[str, int]:
    """Lay the generator's output out as the extractors land it (docs/source-formats.md):
    raw/<source>/ingest_date=D/batch=B/…, db parts named part-NNNN.csv, kafka lines wrapped
    in the consumer's envelope. Returns {generator relpath: raw path} for the labels."""
    import shutil

    moved = {}
    for src in sorted(p for p in gen_dir.rglob("*") if p.is_file() and p.parts[-3] in ("s3", "api", "db", "kafka")):
        source = src.parts[-3]
        folder = lake_root / "raw" / source / f"ingest_date={day}" / f"batch={batch}"
        folder.mkdir(parents=True, exist_ok=True)
        rel = str(src.relative_to(gen_dir))
        if source == "db":
            target = folder / f"part-{len([m for m in moved if m.startswith('db/')]):04d}.csv"
            shutil.copy(src, target)
        elif source == "kafka":
            target = folder / "part-0000.jsonl"
            with open(target, "w", encoding="utf-8") as out:
                for offset, line in enumerate(src.read_text(encoding="utf-8").splitlines()):
                    try:
                        key = json.loads(line)["payload"]["transaction_id"]
                    except (ValueError, KeyError, TypeError):
                        key = None
                    out.write(json.dumps({"topic": "transactions", "partition": 0, "offset": offset,
                                          "timestamp": 1764200000000 + offset, "key": key, "value": line}) + "\n")
        else:
            target = folder / src.name
            shutil.copy(src, target)
        moved[rel] = str(target)
    return moved


def test_generator_day_matches_its_labels_and_truth(spark, tmp_path):
    """Contract with fluxo_dev.generator over all four sources in the raw layout: every planted
    defect gets exactly the labelled reason, every record is accounted for, and every valid
    transaction stages once with the ground-truth canonical values."""
    generator = pytest.importorskip("fluxo_dev.generator")
    import pandas as pd

    from fluxo.storage import list_files
    from fluxo.lake import Lake
    from fluxo.transforms.standardize import map_raw_day, raw_day_files

    rates = {"malformed_record": 0.03, "invalid_amount": 0.03, "invalid_timestamp": 0.03, "future_event_ts": 0.02,
             "invalid_value": 0.04, "missing_required": 0.04, "raw_pan": 0.04, "type_drift": 0.04,
             "duplicate_within": 0.03, "duplicate_cross": 0.03, "redelivery": 0.05}
    gen_dir, lake_root = tmp_path / "gen", tmp_path / "lake"
    generator.generate(gen_dir, date(2026, 11, 26), 1, 1000, seed=11, defect_rates=rates, token_salt=SALT)
    generator_to_raw(gen_dir, lake_root, "2026-11-26")
    files = raw_day_files(list_files, Lake(str(lake_root)), "2026-11-26")
    assert all(files[shape] for shape in ("s3_csv", "s3_jsonl", "api", "db", "kafka"))
    out = standardize(map_raw_day(spark, files), load_fx_rates(spark), token_salt=SALT)
    checked = out.checked.cache()

    labels = pd.read_parquet(gen_dir / "labels" / "labels.parquet")
    rows = checked.select("source", "reason", "_duplicate").toPandas()
    for source in ("s3", "api", "db", "kafka"):
        mine, theirs = rows[rows["source"] == source], labels[labels["source"] == source]
        assert len(mine) == len(theirs), source
        got = collections.Counter(mine["reason"].dropna())
        want = collections.Counter(theirs["expected_reason"].dropna())
        assert got == want and sum(want.values()) > 5, (source, got - want, want - got)
    defects = collections.Counter(labels["defect"].dropna())
    assert defects["redelivery"] > 5 and defects["duplicate_cross"] > 5
    stats = standardize_stats(checked)
    assert stats["read"] == len(labels) == stats["staged"] + stats["quarantined"] + stats["duplicates_dropped"]

    truth = pd.read_parquet(gen_dir / "truth" / "transactions.parquet")
    staged = out.staged.toPandas()
    assert sorted(staged["transaction_id"]) == sorted(truth["transaction_id"])
    assert set(staged["source"]) == {"s3", "api", "db", "kafka"}
    assert (staged["batch_id"] == "g1").all()
    merged = staged.merge(truth, on="transaction_id", suffixes=("", "_truth"))
    for column in TRANSACTION.names:
        if f"{column}_truth" not in merged:
            continue
        ours, theirs = merged[column], merged[f"{column}_truth"]
        if column == "event_ts":
            ours, theirs = pd.to_datetime(ours, utc=True), pd.to_datetime(theirs, utc=True)
        same = (ours == theirs) | (ours.isna() & theirs.isna())
        assert same.all(), (column, merged.loc[~same, [column, f"{column}_truth"]].head(3))


# --- every source shape and hostile s3 files, read from real files -------------------------------------

HOSTILE_DAY = "2026-11-26"
SQL = "Robert'); DROP TABLE transactions;--"
HUGE = "x" * 1_000_000


def api_record(tid, amount=10.5, card=None, **over):
    rec = {"transaction_id": tid, "created_at": "2026-11-26T13:00:00Z", "updated_at": "2026-11-26T13:05:00Z",
           "customer_id": "C7", "card": card or {"token": "tok_api", "last4": "7777"}, "merchant_id": "M7",
           "mcc": "5812", "amount": amount, "currency": "BRL", "country": "BR", "channel": "ecommerce",
           "status": "approved"}
    rec.update(over)
    return rec


def envelope(offset, value, key=None):
    return json.dumps({"topic": "transactions", "partition": 0, "offset": offset, "timestamp": 1764162000000,
                       "key": key, "value": value})


def event(event_id, record):
    return json.dumps({"event_id": event_id, "event_type": "transaction.authorized",
                       "produced_at": "2026-11-26T13:00:01Z", "payload": record})


def hostile_files() -> dict[tuple[str, str], bytes]:
    """(source, file name) -> bytes, with the outcome of each record noted beside it."""
    import gzip

    semi = S3_CSV_HEADER
    return {
        # comma delimiter, shuffled columns, header case/spaces/aliases; BR amount quoted
        ("s3", "comma.csv"): (
            " Transaction_ID , Amount,Data Hora,CLIENTE,cartao,cartao_final,estabelecimento,mcc,moeda,pais,canal,status\n"
            'h-comma,"1.234,56",26/11/2026 10:00:00,C1,tok_a,1234,M1,5411,BRL,BR,pos,aprovada\n'  # staged
            'h-comma-extra,"1,00",26/11/2026 10:00:00,C1,tok_a,1234,M1,5411,BRL,BR,pos,aprovada,surplus\n'  # malformed
            "h-comma-short,\"1,00\",26/11/2026 10:00:00\n"  # malformed
        ).encode(),
        ("s3", "latin1.csv"): (semi + "\n" + csv_line("h-latin", customer="José Ação") + "\n").encode("latin-1"),
        ("s3", "bom.csv"): ("\ufeff" + semi + "\r\n" + csv_line("h-bom", customer="Conceição") + "\r\n").encode(),
        ("s3", "packed.csv.gz"): gzip.compress((semi + "\n" + csv_line("h-gz", amount="2,50") + "\n").encode()),
        ("s3", "extra.csv"): (semi + ";observacao\n" + csv_line("h-unknown") + ";nota\n").encode(),  # unknown_column
        ("s3", "missing.csv"): (semi.replace(";mcc", "") + "\n" + csv_line("h-nomcc").replace(";5411", "") + "\n").encode(),
        ("s3", "nasty.csv"): (
            semi + "\n"
            + csv_line("h-sql", customer=f'"{SQL}"') + "\n"  # staged: just data
            + csv_line("h-huge", customer=HUGE) + "\n"  # invalid_value:customer_id
            + csv_line("h-huge-quoted", merchant=f'"{HUGE};"') + "\n"  # invalid_value:merchant_id
        ).encode(),
        ("s3", "array.json"): json.dumps(
            [json.loads(json_line("h-arr1")), json.loads(json_line("h-arr2", amount=7)), "not an object"], indent=2
        ).encode(),
        ("s3", "lines-in.json.gz"): gzip.compress((json_line("h-jl1") + "\n" + '{"id": "h-broken"' + "\n").encode()),
        ("api", "page-0001.json"): json.dumps({"data": [
            api_record("a-ok", amount=1234.5),  # staged
            api_record("a-pan", card={"token": PAN, "last4": None}, amount="12.30"),  # staged, tokenized
            json.dumps(api_record("a-string"))[:40],  # a JSON string instead of an object: malformed
            api_record("a-naive", created_at="2026-11-26T13:00:00"),  # invalid_timestamp
        ], "next_cursor": "abc"}).encode(),
        ("api", "page-0002.json"): b'{"data": [{"transaction_id": "a-cut", ',  # truncated page: malformed
        ("db", "part-0000.csv"): (
            "id,txn_uuid,customer_id,card_token,card_last4,merchant_id,mcc,amount_cents,currency,country,"
            "channel_code,status_code,created_at,updated_at\n"
            "1,d-ok,C8,tok_db,8888,M8,5411,123456,BRL,BR,ECOM,R1,2026-11-26T13:00:00.5+00:00,2026-11-26T14:00:00+00:00\n"
            '2,d-comma,"C,9",tok_db,,M8,5411,990,usd,us,MOB,00,2026-11-26 10:00:00-03,2026-11-26 14:00:00+00\n'
            "3,d-badcents,C8,tok_db,8888,M8,5411,12.5,BRL,BR,POS,00,2026-11-26T13:00:00+00:00,2026-11-26T14:00:00+00:00\n"
            "4,d-pix,C8,tok_db,8888,M8,5411,100,BRL,BR,PIX,05,2026-11-26T13:00:00+00:00,2026-11-26T14:00:00+00:00\n"
            '5,d-multi,"C\n8",tok_db,8888,"LOJA\r\nNOVA, ""2""",5411,100,BRL,BR,POS,00,2026-11-26T13:00:00+00:00,'
            "2026-11-26T14:00:00+00:00\n"  # staged: one record, its values intact
            "6,d-short,C8\n"  # malformed
        ).encode(),
        ("kafka", "part-0000.jsonl"): "\n".join([
            envelope(0, event("e1", api_record("k-ok")), "k-ok"),  # staged
            envelope(1, event("e1", api_record("k-ok")), "k-ok"),  # redelivery: duplicate
            envelope(2, event("e2", api_record("k-bad", status="pending"))),  # invalid_value:status
            envelope(3, event("e2", api_record("k-bad", status="pending"))),  # redelivered invalid event: duplicate
            envelope(4, event("e3", api_record("k-cut"))[:60]),  # truncated message: malformed
            envelope(5, json.dumps(event("e4", api_record("k-str")))),  # value is a JSON string of a JSON string
            "not json at all",  # malformed
        ]).encode() + b"\n",
    }


@pytest.fixture(scope="module")
def hostile(spark, tmp_path_factory):
    import os

    from fluxo.storage import list_files
    from fluxo.lake import Lake
    from fluxo.transforms.standardize import map_raw_day, raw_day_files

    root = tmp_path_factory.mktemp("hostile")
    for (source, name), data in hostile_files().items():
        folder = root / "raw" / source / f"ingest_date={HOSTILE_DAY}" / "batch=h1"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        os.utime(folder / name, (LANDED.timestamp(), LANDED.timestamp()))
    files = raw_day_files(list_files, Lake(str(root)), HOSTILE_DAY)
    out = standardize(map_raw_day(spark, files, "run-h"), load_fx_rates(spark), token_salt=SALT)
    checked = out.checked.cache()
    rows = checked.select("source", "transaction_id", "reason", "_duplicate", "raw_record", "source_file").collect()
    return {"rows": rows, "staged": {r["transaction_id"]: r for r in out.staged.collect()},
            "stats": standardize_stats(checked)}


def test_hostile_records_get_their_reasons(hostile):
    def outcome(r):
        return r["reason"] or ("duplicate" if r["_duplicate"] else "staged")

    got = collections.Counter((r["source"], outcome(r)) for r in hostile["rows"])
    assert got == collections.Counter({
        ("s3", "staged"): 8, ("s3", "malformed_record"): 4, ("s3", "unknown_column"): 1,
        ("s3", "missing_required:mcc"): 1, ("s3", "invalid_value:customer_id"): 1,
        ("s3", "invalid_value:merchant_id"): 1,
        ("api", "staged"): 2, ("api", "malformed_record"): 2, ("api", "invalid_timestamp"): 1,
        ("db", "staged"): 3, ("db", "invalid_amount"): 1, ("db", "invalid_value:channel"): 1,
        ("db", "malformed_record"): 1,
        ("kafka", "staged"): 1, ("kafka", "duplicate"): 2, ("kafka", "invalid_value:status"): 1,
        ("kafka", "malformed_record"): 3,
    })
    stats = hostile["stats"]
    assert stats["read"] == len(hostile["rows"]) == stats["staged"] + stats["quarantined"] + stats["duplicates_dropped"]
    assert stats["duplicates_dropped"] == 2


def test_hostile_s3_files_are_read_right(hostile):
    staged = hostile["staged"]
    assert set(staged) >= {"h-comma", "h-latin", "h-bom", "h-gz", "h-sql", "h-arr1", "h-arr2", "h-jl1"}
    assert staged["h-comma"]["amount"] == Decimal("1234.56") and staged["h-comma"]["customer_id"] == "C1"
    assert staged["h-comma"]["event_ts"] == datetime(2026, 11, 26, 13, 0, 0)
    assert staged["h-latin"]["customer_id"] == "José Ação"
    assert staged["h-bom"]["customer_id"] == "Conceição"
    assert staged["h-gz"]["amount"] == Decimal("2.50")
    assert staged["h-sql"]["customer_id"] == SQL
    assert staged["h-arr2"]["amount"] == Decimal("7.00")
    huge = [r for r in hostile["rows"] if r["reason"] == "invalid_value:customer_id"]
    assert len(huge[0]["raw_record"]) > 1_000_000  # quarantined whole, not truncated


def test_api_db_and_kafka_shapes(hostile):
    staged = hostile["staged"]
    ok = staged["a-ok"]
    assert (ok["source"], ok["batch_id"], ok["amount"], ok["event_ts"]) == (
        "api", "h1", Decimal("1234.50"), datetime(2026, 11, 26, 13, 0, 0))
    assert staged["a-pan"]["card_token"] == expected_token(PAN) and staged["a-pan"]["card_last4"] == "1111"
    d = staged["d-ok"]
    assert (d["amount"], d["channel"], d["status"], d["event_ts"]) == (
        Decimal("1234.56"), "ecommerce", "reversed", datetime(2026, 11, 26, 13, 0, 0, 500000))
    c = staged["d-comma"]
    assert (c["customer_id"], c["amount"], c["amount_reporting"], c["channel"], c["status"], c["event_ts"]) == (
        "C,9", Decimal("9.90"), Decimal("52.97"), "mobile", "approved", datetime(2026, 11, 26, 13, 0, 0))
    multi = staged["d-multi"]
    assert (multi["customer_id"], multi["merchant_id"]) == ("C\n8", 'LOJA\r\nNOVA, "2"')
    short = [r for r in hostile["rows"] if r["source"] == "db" and r["reason"] == "malformed_record"]
    assert [r["raw_record"] for r in short] == ["6,d-short,C8"]
    k = staged["k-ok"]
    assert (k["source"], k["customer_id"], k["amount"]) == ("kafka", "C7", Decimal("10.50"))
    cut = [r for r in hostile["rows"] if r["source"] == "api" and r["reason"] == "malformed_record"]
    assert sorted(r["raw_record"][:12] for r in cut) == ['"{\\"transact', '{"data": [{"']


def documented_reasons() -> set[str]:
    """Reason codes of the table in docs/source-formats.md (`<column>` kept as a placeholder)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "source-formats.md").read_text(encoding="utf-8")
    table = text[text.index("## Quarantine reasons"):]
    return set(re.findall(r"^\| `([a-z_]+(?::[a-z_<>]+)?)` \|", table, re.MULTILINE))


def test_every_reason_standardize_gives_is_in_the_documented_table(result, hostile):
    documented = documented_reasons()
    seen = {r["reason"] for r in result["checked"] + hostile["rows"] if r["reason"]}
    assert len(seen) > 25
    for reason in seen:
        assert reason in documented or reason.split(":")[0] + ":<column>" in documented, reason


def test_documented_tie_breaks_are_the_code_s(spark):
    """Rank two copies that differ from one documented step on (the later steps pulling the other
    way): the copy the docs say wins is the one the code keeps."""
    import re
    from pathlib import Path

    from fluxo.transforms._common import rank_copies

    text = (Path(__file__).resolve().parents[1] / "docs" / "pipeline.md").read_text(encoding="utf-8")
    rule = text[text.index("## Dedupe rule"):text.index("### Where each duplicate is dropped")]
    columns = ["ingested_at", "source", "batch_id"] + re.findall(r"`([a-z_0-9]+)`", rule.split("4. then")[1].split(". So")[0])
    assert "`api`, `db`, `kafka`, `s3`" in rule and "the smaller amount wins" in rule
    assert sorted(columns) == sorted(c for c in TRANSACTION.names if c != "transaction_id")
    low = {"string": "a", "timestamp": datetime(2026, 1, 1), "decimal(18,2)": Decimal("1.00")}
    high = {"string": "b", "timestamp": datetime(2026, 1, 2), "decimal(18,2)": Decimal("2.00")}
    low["source"], high["source"] = "api", "db"  # priority, not alphabetical: api before db before kafka before s3
    rows = []
    for step, name in enumerate(columns):
        def value(column, winner):
            kind = "source" if column == "source" else TRANSACTION.column(column).type
            if columns.index(column) < step:
                return low[kind]
            if column == name:
                return (low if winner else high)[kind]
            return (high if winner else low)[kind]
        for winner in (True, False):
            rows.append(tuple(name if c == "transaction_id" else value(c, winner) for c in TRANSACTION.names))
    ranked = rank_copies(spark.createDataFrame(rows, TRANSACTION.spark_schema()))
    kept = {r["transaction_id"]: r for r in ranked.where("_copy_rank = 1").collect()}
    for name in columns:
        expected = low["source"] if name == "source" else low[TRANSACTION.column(name).type]
        assert kept[name][name] == expected, name
