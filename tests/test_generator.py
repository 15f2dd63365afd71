"""The synthetic generator: determinism, the four shapes of docs/source-formats.md, labels and truth.

The checks re-read every rendered record with an independent parser written
from the spec (stdlib csv/json/datetime/Decimal only), so a label that says
"valid" must parse to exactly the truth row, and a label that says
"quarantined" must fail exactly the stated rule first.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import re
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fluxo.contract import FRAUD_RULES, CHANNEL_SYNONYMS, CURRENCIES, STATUS_SYNONYMS, TRANSACTION
from fluxo_dev.generator import DEFECTS, api_cursor, generate, truth_schema, upload_landing
from fluxo_dev.generator.catalog import MCC_CODES, MCC_PROFILES, load_fx_rates
from fluxo.tokenize import card_token, is_raw_pan

START = date(2026, 11, 25)
SALT = "test-salt"
# Every defect frequent enough to show up in a small run.
BOOSTED = {d: 0.03 for d in DEFECTS}
INGESTED_AT = datetime(2027, 1, 1, tzinfo=timezone.utc)
SAO_PAULO = timezone(timedelta(hours=-3))
CSV_HEADER = "id_transacao;data_hora;cliente;cartao;cartao_final;estabelecimento;mcc;valor;moeda;pais;canal;status"
DB_HEADER = ("id,txn_uuid,customer_id,card_token,card_last4,merchant_id,mcc,amount_cents,currency,country,"
             "channel_code,status_code,created_at,updated_at")
DB_CHANNEL = {"POS": "pos", "ECOM": "ecommerce", "ATM": "atm", "MOB": "mobile", "MOTO": "moto"}
DB_STATUS = {"00": "approved", "05": "declined", "51": "declined", "R1": "reversed"}
CANONICAL = [c for c in TRANSACTION.names if c not in ("source", "batch_id", "ingested_at", "amount_reporting")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    summary = generate(out, START, 2, 6000, seed=11, defect_rates=BOOSTED, token_salt=SALT)
    truth = {r["transaction_id"]: r for r in pq.read_table(out / "truth" / "transactions.parquet").to_pylist()}
    labels = pq.read_table(out / "labels" / "labels.parquet").to_pylist()
    return out, summary, truth, labels


# --- an independent reading of docs/source-formats.md ------------------------------------------

class Rejected(Exception):
    pass


def _required(record: dict) -> None:
    for column in ("transaction_id", "event_ts", "customer_id", "card_token", "merchant_id", "mcc", "amount",
                   "currency", "country", "channel", "status"):
        value = record.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise Rejected(f"missing_required:{column}")


def _validate(record: dict, parse_amount, parse_ts) -> dict:
    """The doc's checks in the doc's order; returns the canonical record."""
    _required(record)
    try:
        amount = parse_amount(record["amount"])
    except (ValueError, ArithmeticError, TypeError):
        raise Rejected("invalid_amount")
    if amount <= 0:
        raise Rejected("non_positive_amount")
    try:
        ts = parse_ts(record["event_ts"]).astimezone(timezone.utc)
    except (ValueError, TypeError):
        raise Rejected("invalid_timestamp")
    if ts > INGESTED_AT + timedelta(minutes=5):
        raise Rejected("future_event_ts")
    channel = CHANNEL_SYNONYMS.get(record["channel"].lower())
    if channel is None:
        raise Rejected("invalid_value:channel")
    status = STATUS_SYNONYMS.get(record["status"].lower())
    if status is None:
        raise Rejected("invalid_value:status")
    if record["currency"] not in CURRENCIES:
        raise Rejected("invalid_value:currency")
    country = record["country"].upper()
    if not re.fullmatch(r"[A-Z]{2}", country):
        raise Rejected("invalid_value:country")
    if not re.fullmatch(r"[0-9]{4}", record["mcc"]):
        raise Rejected("invalid_value:mcc")
    card, last4 = record["card_token"], record.get("card_last4") or None
    if is_raw_pan(card):
        card, last4 = card_token(card, SALT), card[-4:]
    return dict(record, event_ts=ts, amount=amount, channel=channel, status=status, country=country,
                card_token=card, card_last4=last4)


def _br_amount(text: str) -> Decimal:
    if not re.fullmatch(r"-?([0-9]{1,3}(\.[0-9]{3})+|[0-9]+),[0-9]{2}", text):
        raise ValueError(text)
    return Decimal(text.replace(".", "").replace(",", "."))


def _dot_amount(value) -> Decimal:
    if isinstance(value, str) and not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
        raise ValueError(value)
    return Decimal(str(value))


def _json_number(value) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise TypeError(value)
    return Decimal(value)


def parse_csv_line(line: str) -> dict:
    fields = next(csv.reader([line], delimiter=";", quotechar='"'))
    if len(fields) != 12:
        raise Rejected("malformed_record")
    tid, ts, customer, card, last4, merchant, mcc, valor, currency, country, channel, status = fields
    record = dict(transaction_id=tid, event_ts=ts, customer_id=customer, card_token=card, card_last4=last4,
                  merchant_id=merchant, mcc=mcc, amount=valor, currency=currency, country=country,
                  channel=channel, status=status)
    return _validate(record, _br_amount,
                     lambda s: datetime.strptime(s, "%d/%m/%Y %H:%M:%S").replace(tzinfo=SAO_PAULO))


def _loads(text: str):
    try:
        obj = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError:
        raise Rejected("malformed_record")
    if not isinstance(obj, dict):
        raise Rejected("malformed_record")
    return obj


def parse_gateway(obj: dict) -> dict:
    card, merchant, amount = obj.get("card") or {}, obj.get("merchant") or {}, obj.get("amount") or {}
    record = dict(transaction_id=obj.get("id"), event_ts=obj.get("occurred_at"),
                  customer_id=(obj.get("customer") or {}).get("id"),
                  card_token=card.get("number") or card.get("token"), card_last4=card.get("last4"),
                  merchant_id=merchant.get("id"), mcc=merchant.get("mcc"), country=merchant.get("country"),
                  amount=amount.get("value"), currency=amount.get("currency"),
                  channel=obj.get("channel"), status=obj.get("status"))
    return _validate(record, _dot_amount, datetime.fromisoformat)


def parse_api_record(obj) -> dict:
    if not isinstance(obj, dict):
        raise Rejected("malformed_record")
    card = obj.get("card") or {}
    record = dict(transaction_id=obj.get("transaction_id"), event_ts=obj.get("created_at"),
                  customer_id=obj.get("customer_id"), card_token=card.get("token"), card_last4=card.get("last4"),
                  merchant_id=obj.get("merchant_id"), mcc=obj.get("mcc"), amount=obj.get("amount"),
                  currency=obj.get("currency"), country=obj.get("country"), channel=obj.get("channel"),
                  status=obj.get("status"))
    if record["event_ts"] is not None and not str(record["event_ts"]).endswith("Z"):
        raise AssertionError(f"API timestamps are in Z: {record['event_ts']}")
    return _validate(record, _json_number, datetime.fromisoformat)


def parse_db_row(row: dict) -> dict:
    record = dict(transaction_id=row["txn_uuid"], event_ts=row["created_at"], customer_id=row["customer_id"],
                  card_token=row["card_token"], card_last4=row["card_last4"], merchant_id=row["merchant_id"],
                  mcc=row["mcc"], amount=row["amount_cents"], currency=row["currency"], country=row["country"],
                  channel=DB_CHANNEL.get(row["channel_code"], row["channel_code"]),
                  status=DB_STATUS.get(row["status_code"], row["status_code"]))
    return _validate(record, lambda cents: Decimal(int(cents)) * Decimal("0.01"), datetime.fromisoformat)


def read_records(out: Path, relpath: str) -> list:
    """The raw records of one file, 1-based record_no = index + 1."""
    text = (out / relpath).read_text(encoding="utf-8")
    if relpath.endswith(".csv"):
        lines = text.split("\n")
        assert lines[-1] == "", "files end with a newline"
        return lines[1:-1]
    if relpath.endswith(".jsonl"):
        return text.split("\n")[:-1]
    return json.loads(text, parse_float=Decimal)["data"]


def parse(out: Path, relpath: str, raw) -> dict:
    if relpath.startswith("s3/") and relpath.endswith(".csv"):
        return parse_csv_line(raw)
    if relpath.startswith("s3/"):
        return parse_gateway(_loads(raw))
    if relpath.startswith("api/"):
        return parse_api_record(raw)
    if relpath.startswith("kafka/"):
        envelope = _loads(raw)
        assert set(envelope) == {"event_id", "event_type", "produced_at", "payload"}
        assert envelope["event_type"] == "transaction.authorized"
        datetime.fromisoformat(envelope["produced_at"])
        return parse_api_record(envelope["payload"])
    header = (out / relpath).read_text().split("\n", 1)[0]
    return parse_db_row(dict(zip(header.split(","), next(csv.reader([raw])))))


def outcome(out: Path, relpath: str, raw) -> tuple[str | None, dict | None]:
    try:
        return None, parse(out, relpath, raw)
    except Rejected as rejected:
        return str(rejected), None


# --- tests ----------------------------------------------------------------------------------------

def test_every_record_is_labelled_and_parses_to_its_label(run):
    out, _, truth, labels = run
    by_file = defaultdict(list)
    for label in labels:
        by_file[label["file"]].append(label)
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.parts[-2].startswith("dt=")}
    assert set(by_file) == files

    seen = Counter()
    for relpath, file_labels in by_file.items():
        records = read_records(out, relpath)
        assert [lb["record_no"] for lb in file_labels] == list(range(1, len(records) + 1)), relpath
        for label, raw in zip(file_labels, records):
            reason, canonical = outcome(out, relpath, raw)
            assert reason == label["expected_reason"], (relpath, label, raw)
            assert (reason is None) == (label["expected"] == "valid")
            if canonical is not None:
                expected = truth[label["transaction_id"]]
                assert {c: canonical[c] for c in CANONICAL} == {c: expected[c] for c in CANONICAL}, (relpath, raw)
            seen[(label["defect"] or "none").split(":")[0]] += 1
    assert set(DEFECTS) <= set(seen), f"defects never rendered: {set(DEFECTS) - set(seen)}"


def test_expected_curated_set_is_the_truth(run):
    _, _, truth, labels = run
    valid = {lb["transaction_id"] for lb in labels if lb["expected"] == "valid"}
    assert valid == set(truth)
    quarantined = {lb["transaction_id"] for lb in labels if lb["expected"] == "quarantined"}
    assert not quarantined & valid
    for source in ("s3", "api", "db", "kafka"):
        assert {lb["transaction_id"] for lb in labels if lb["source"] == source and lb["expected"] == "valid"}


def test_duplicates_are_true_duplicates_of_a_clean_record(run):
    _, _, _, labels = run
    by_id = defaultdict(list)
    for lb in labels:
        by_id[lb["transaction_id"]].append(lb)
    for kind in ("duplicate_within", "duplicate_cross", "redelivery"):
        dups = [lb for lb in labels if lb["defect"] == kind]
        assert dups, kind
        for dup in dups:
            others = [o for o in by_id[dup["transaction_id"]] if o is not dup]
            assert len(others) == 1 and others[0]["expected"] == "valid"
            if kind == "duplicate_cross":
                assert others[0]["file"].rsplit("/", 1)[0] != dup["file"].rsplit("/", 1)[0] or \
                    others[0]["file"].rsplit(".", 1)[1] != dup["file"].rsplit(".", 1)[1]
            else:
                assert others[0]["source"] == dup["source"]


def test_kafka_redelivery_repeats_the_event(run):
    out, _, _, labels = run
    redelivered = [lb for lb in labels if lb["defect"] == "redelivery"]
    assert redelivered
    for lb in redelivered:
        lines = read_records(out, lb["file"])
        copy = lines[lb["record_no"] - 1]
        assert lines.index(copy) < lb["record_no"] - 1, "the original comes first and is byte-identical"


def test_truth_schema_amounts_and_fx(run):
    out, _, truth, _ = run
    table = pq.read_table(out / "truth" / "transactions.parquet")
    assert table.schema.equals(truth_schema())
    contract = TRANSACTION.arrow_schema()
    for name in CANONICAL + ["amount_reporting"]:
        assert table.schema.field(name).type == contract.field(name).type
    assert table.schema.field("event_ts").type.tz == "UTC"
    rates = load_fx_rates()
    for row in truth.values():
        assert row["amount"] > 0 and row["amount"].as_tuple().exponent == -2
        expected = (row["amount"] * rates[row["currency"]]).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        assert row["amount_reporting"] == expected
        assert row["card_token"].startswith("tok_") and not is_raw_pan(row["card_token"])
        assert row["card_last4"] is None or re.fullmatch(r"[0-9]{4}", row["card_last4"])


def test_shares_look_like_the_business(run):
    _, _, truth, _ = run
    rows = list(truth.values())
    n = len(rows)
    share = lambda pred: sum(1 for r in rows if pred(r)) / n  # noqa: E731
    assert 0.80 < share(lambda r: r["currency"] == "BRL") < 0.90
    assert 0.80 < share(lambda r: r["country"] == "BR") < 0.90
    assert 0.78 < share(lambda r: r["status"] == "approved") < 0.90
    assert 0.01 < share(lambda r: r["status"] == "reversed") < 0.06
    assert {r["channel"] for r in rows} == {"pos", "ecommerce", "atm", "mobile", "moto"}
    assert all(r["channel"] == "atm" for r in rows if r["mcc"] == "6011")


def test_late_events_belong_to_the_previous_day(run):
    _, _, truth, labels = run
    late = [lb for lb in labels if lb["defect"] == "late_event"]
    assert late
    for lb in late:
        file_day = date.fromisoformat(lb["file"].split("dt=")[1][:10])
        assert truth[lb["transaction_id"]]["event_ts"].date() == file_day - timedelta(days=1)
    on_time = [lb for lb in labels if lb["expected"] == "valid" and lb["defect"] != "late_event"]
    for lb in on_time:
        assert truth[lb["transaction_id"]]["event_ts"].date().isoformat() == lb["file"].split("dt=")[1][:10]


def test_fraud_and_outliers_are_planted(run):
    _, _, truth, _ = run
    rows = sorted(truth.values(), key=lambda r: r["event_ts"])
    by_pattern = defaultdict(list)
    for r in rows:
        by_pattern[r["fraud_pattern"]].append(r)
    # every fraud rule has planted positives and near misses, well under 1 % of the transactions
    assert set(FRAUD_RULES) <= set(by_pattern)
    near = {r["near_miss"] for r in rows if r["near_miss"]}
    assert near == set(FRAUD_RULES)
    assert sum(len(by_pattern[rule]) for rule in FRAUD_RULES) < 0.01 * len(rows)
    # each scenario runs on a card of its own: no ordinary row on a planted card
    planted_cards = {r["card_token"] for r in rows if r["fraud_pattern"] or r["near_miss"]}
    ordinary = [r for r in rows if r["card_token"] in planted_cards and not (r["fraud_pattern"] or r["near_miss"])]
    assert all(r["channel"] in ("pos", "atm", "ecommerce") for r in ordinary)
    for r in by_pattern["night_high_risk_mcc"]:
        assert r["mcc"] in ("5944", "7995", "4829") and r["amount_reporting"] > 2000
    # a merchant spree is 8 different merchants (its near miss 7): a repeated one would make the
    # positive a near miss, and recall would count a miss the rule was right about
    for card in {r["card_token"] for r in by_pattern["merchants_1h"]}:
        assert len({r["merchant_id"] for r in rows if r["card_token"] == card}) == 8
    for card in {r["card_token"] for r in rows if r["near_miss"] == "merchants_1h"}:
        assert len({r["merchant_id"] for r in rows if r["card_token"] == card}) == 7
    # abroad, ordinary traffic is card-not-present: card-present abroad is what the travel rules plant
    assert all(r["channel"] == "ecommerce" for r in rows if r["country"] != "BR" and r["card_token"] not in planted_cards)

    medians = {p[0]: Decimal(str(p[2])) for p in MCC_PROFILES}
    for r in by_pattern["high_amount_mcc"]:
        assert r["mcc"] in ("5944", "7995", "4829") and r["amount_reporting"] >= 25_000
    outliers = [r for r in rows if r["is_outlier"]]
    assert len(outliers) >= 2
    for r in rows:
        assert r["is_outlier"] == (r["amount_reporting"] >= 50 * medians[r["mcc"]])
    # Against the data's own median, the planted outliers still stand out.
    per_mcc = defaultdict(list)
    for r in rows:
        per_mcc[r["mcc"]].append(r["amount_reporting"])
    for r in outliers:
        values = sorted(per_mcc[r["mcc"]])
        if len(values) >= 100:
            assert r["amount_reporting"] >= 40 * values[len(values) // 2]
    assert set(MCC_CODES) >= {r["mcc"] for r in rows}


def test_raw_pans_are_tokenised_with_the_salt(run):
    out, _, truth, labels = run
    raw = [lb for lb in labels if lb["defect"] == "raw_pan"]
    assert {lb["source"] for lb in raw} == {"s3", "api", "db", "kafka"}
    pans = set()
    for lb in raw:
        record = read_records(out, lb["file"])[lb["record_no"] - 1]
        pan = re.search(r"(?<![0-9])[0-9]{13,19}(?![0-9])", json.dumps(record, default=str) if isinstance(record, dict) else record)
        assert pan and _luhn_ok(pan.group())
        pans.add(pan.group())
        row = truth[lb["transaction_id"]]
        assert row["card_token"] == "tok_" + hashlib.sha256((SALT + pan.group()).encode()).hexdigest()[:32]
        assert row["card_last4"] == pan.group()[-4:]
    truth_text = " ".join(str(v) for r in truth.values() for v in r.values())
    assert not any(p in truth_text for p in pans)


def _luhn_ok(pan: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_csv_shape(run):
    out, _, _, labels = run
    path = out / "s3" / f"dt={START}" / f"transactions-{START}-001.csv"
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == CSV_HEADER
    valid = {(lb["file"], lb["record_no"]) for lb in labels if lb["expected"] == "valid"}
    rel = str(path.relative_to(out))
    amounts = [line.split(";")[7] for i, line in enumerate(lines[1:-1], 1) if (rel, i) in valid]
    assert all(re.fullmatch(r"([0-9]{1,3}(\.[0-9]{3})+|[0-9]+),[0-9]{2}", a) for a in amounts)
    assert any("." in a for a in amounts) and any(re.fullmatch(r"[0-9]{4,},[0-9]{2}", a) for a in amounts)
    stamps = [line.split(";")[1] for i, line in enumerate(lines[1:-1], 1) if (rel, i) in valid]
    assert all(re.fullmatch(r"[0-9]{2}/[0-9]{2}/[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2}", s) for s in stamps)


def test_gateway_jsonl_is_nested_with_offsets(run):
    out, _, _, _ = run
    lines = (out / "s3" / f"dt={START}" / f"gateway-{START}.jsonl").read_text().split("\n")[:-1]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    assert len(parsed) < len(lines), "some broken lines are planted"
    assert all(set(o) == {"id", "occurred_at", "customer", "card", "merchant", "amount", "channel", "status"}
               for o in parsed)
    offsets = {o["occurred_at"][19:] for o in parsed if o["occurred_at"]}
    assert {"-03:00", "Z", "+01:00"} <= offsets
    kinds = {type(o["amount"]["value"]).__name__ for o in parsed}
    assert {"str", "float"} <= kinds


def test_api_pages_chain_by_cursor(run):
    out, _, _, _ = run
    for day in (START, START + timedelta(days=1)):
        pages = sorted((out / "api" / f"dt={day}").glob("page-*.json"))
        assert len(pages) >= 2
        by_cursor = {api_cursor(day, int(p.stem.split("-")[1])): p for p in pages}
        visited, page, total = [], pages[0], 0
        while page is not None:
            body = json.loads(page.read_text())
            assert set(body) == {"data", "next_cursor"}
            visited.append(page)
            total += len(body["data"])
            assert len(body["data"]) <= 1000
            nxt = body["next_cursor"]
            if nxt is not None:
                decoded = json.loads(base64.urlsafe_b64decode(nxt + "=" * (-len(nxt) % 4)))
                assert decoded["dt"] == day.isoformat()
            page = by_cursor[nxt] if nxt is not None else None
        assert visited == pages
        updated = [r["updated_at"] for p in pages for r in json.loads(p.read_text())["data"] if isinstance(r, dict)]
        assert updated == sorted(updated), "pages walk updated_at"
        assert all(u[:10] == day.isoformat() for u in updated)


def test_db_cents_are_minor_units(run):
    out, _, truth, labels = run
    valid = {(lb["file"], lb["record_no"]) for lb in labels if lb["expected"] == "valid" and lb["source"] == "db"}
    rel = f"db/dt={START}/card_transaction.csv"
    with open(out / rel, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == DB_HEADER.split(",")
    ids = [int(r["id"]) for r in rows]
    assert len(set(ids)) == len(ids)
    checked = 0
    for i, row in enumerate(rows, 1):
        if (rel, i) in valid:
            assert Decimal(int(row["amount_cents"])) * Decimal("0.01") == truth[row["txn_uuid"]]["amount"]
            assert row["channel_code"] in DB_CHANNEL and row["status_code"] in DB_STATUS
            assert datetime.fromisoformat(row["created_at"]).utcoffset() == timedelta(hours=-3)
            checked += 1
    assert checked > 100


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    generate(tmp_path / "a", START, 2, 300, seed=5, token_salt=SALT)
    generate(tmp_path / "b", START, 2, 300, seed=5, token_salt=SALT)
    generate(tmp_path / "c", START, 2, 300, seed=6, token_salt=SALT)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if not k.endswith("manifest.json"))


def test_source_subset_renders_the_same_records_and_every_fraud_scenario_whole(tmp_path, run):
    generate(tmp_path, START, 2, 300, seed=1, token_salt=SALT)  # an earlier run's files must not linger
    generate(tmp_path, START, 1, 6000, seed=11, sources="api,kafka", defect_rates=BOOSTED, token_salt=SALT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api", "kafka", "labels", "manifest.json", "truth"]
    assert sorted(p.name for p in (tmp_path / "kafka").iterdir()) == [f"dt={START}"]
    labels = pq.read_table(tmp_path / "labels" / "labels.parquet").to_pylist()
    truth = pq.read_table(tmp_path / "truth" / "transactions.parquet").column("transaction_id").to_pylist()
    assert {lb["source"] for lb in labels} == {"api", "kafka"}
    assert set(truth) == {lb["transaction_id"] for lb in labels if lb["expected"] == "valid"}

    # a planted scenario (every row on its card) arrives whole, in a rendered source, so its label
    # still describes the data; every other transaction is rendered as in the full run
    _, _, full_truth, full_labels = run
    on_start = [r for r in full_truth.values() if r["event_ts"].date() == START]
    scenario_cards = {r["card_token"] for r in on_start if r["fraud_pattern"] or r["near_miss"]}
    scenario = {r["transaction_id"] for r in on_start if r["card_token"] in scenario_cards}
    assert scenario and scenario <= set(truth)

    def rendering(rows):
        return sorted((lb["transaction_id"], lb["source"], lb["defect"] or "", lb["expected"]) for lb in rows
                      if lb["transaction_id"] not in scenario and lb["file"].split("/")[1] == f"dt={START}")

    assert rendering(labels) == rendering(lb for lb in full_labels if lb["source"] in ("api", "kafka"))


def test_manifest_counts(run):
    out, summary, truth, labels = run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parameters"]["seed"] == 11 and manifest["parameters"]["token_salt"] == "explicit"
    assert SALT not in (out / "manifest.json").read_text()
    assert manifest["truth"]["transactions"] == len(truth) == summary["truth_rows"]
    assert manifest["labels"]["records"] == len(labels)
    for day, per_source in manifest["days"].items():
        for source, s in per_source.items():
            rows = [lb for lb in labels if lb["source"] == source and f"dt={day}" in lb["file"]]
            assert s["records"] == len(rows)
            assert s["expected_quarantined"] == sum(lb["expected"] == "quarantined" for lb in rows)
            assert s["distinct_valid_transactions"] == len({lb["transaction_id"] for lb in rows
                                                            if lb["expected"] == "valid"})


def test_defect_rates_are_validated():
    with pytest.raises(ValueError):
        generate(Path("/nonexistent"), START, 1, 200, defect_rates={"db": {"malformed_record": 0.1}})
    with pytest.raises(ValueError):
        generate(Path("/nonexistent"), START, 1, 200, defect_rates={"bogus": 0.1})


def test_upload_landing_puts_s3_files_under_the_prefix(tmp_path, monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3

    from fluxo_platform.settings import FluxoSettings

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    generate(tmp_path, START, 2, 300, seed=3, sources="s3,db", token_salt=SALT)
    settings = FluxoSettings(s3_endpoint="", s3_access_key="testing", s3_secret_key="testing",
                             aws_region="us-east-1", landing_bucket="landing-test", landing_prefix="transactions")
    with moto.mock_aws():
        keys = upload_landing(tmp_path, [START], settings=settings)
        assert keys == [f"transactions/dt={START}/gateway-{START}.jsonl",
                        f"transactions/dt={START}/transactions-{START}-001.csv"]
        client = boto3.client("s3", region_name="us-east-1")
        body = client.get_object(Bucket="landing-test", Key=keys[1])["Body"].read()
        assert body == (tmp_path / "s3" / f"dt={START}" / f"transactions-{START}-001.csv").read_bytes()
        assert len(upload_landing(tmp_path, None, settings=settings)) == 4


def test_cli_prints_a_line_per_day_and_source(tmp_path, capsys):
    from fluxo_dev.generator.__main__ import main

    assert main(["--start", "2026-11-25", "--days", "2", "--rows-per-day", "200", "--out", str(tmp_path),
                 "--sources", "s3,kafka"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert [ln.split(":")[0] for ln in lines[:4]] == ["2026-11-25 s3", "2026-11-25 kafka", "2026-11-26 s3",
                                                       "2026-11-26 kafka"]
    assert (tmp_path / "kafka" / "dt=2026-11-26" / "events.jsonl").exists()


def test_tokenize_rule():
    pan = "4111111111111111"
    assert card_token(pan, "s") == "tok_" + hashlib.sha256(b"s" + pan.encode()).hexdigest()[:32]
    assert is_raw_pan(pan) and is_raw_pan("3" * 13) and not is_raw_pan("tok_abc") and not is_raw_pan("1" * 20)
