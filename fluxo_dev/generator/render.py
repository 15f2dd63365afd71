"""Render records in the four source shapes of docs/source-formats.md.

Every field is built column-wise with pyarrow compute (strftime, padding,
element-wise joins); the few defect rows that need string surgery (truncated
JSON, shortened CSV lines) are handled on their subset only.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fluxo.contract import CHANNELS, STATUSES

from . import catalog as cat
from .defects import (
    API, DB, INVALID_COLUMNS, KAFKA, MISSING_COLUMNS, S3_CSV, S3_JSONL, D, Records, column_choice, variant,
)
from .universe import DAY_SECONDS, Dimensions, DayTransactions, day_start_epoch

CSV_HEADER = "id_transacao;data_hora;cliente;cartao;cartao_final;estabelecimento;mcc;valor;moeda;pais;canal;status"
DB_HEADER = ("id,txn_uuid,customer_id,card_token,card_last4,merchant_id,mcc,amount_cents,currency,country,"
             "channel_code,status_code,created_at,updated_at")
CSV_PART_ROWS = 250_000
API_PAGE_SIZE = 1_000
SAO_PAULO_OFFSET = -3 * 3600  # no DST in Brazil since 2019
KAFKA_EVENT_TYPE = "transaction.authorized"
# JSONL gateway timestamps: the same instant written with different offsets.
GATEWAY_OFFSETS = ((SAO_PAULO_OFFSET, "-03:00"),) * 7 + ((0, "Z"),) * 2 + ((3600, "+01:00"),)
# (start, stop, replacement) turning a well-formed timestamp into an impossible one.
BAD_BR_TIMESTAMP = ((0, 5, "31/02"), (0, 5, "30/02"), (0, 2, "32"), (3, 5, "13"), (11, 13, "25"))
BAD_ISO_TIMESTAMP = ((5, 10, "02-31"), (5, 10, "02-30"), (8, 10, "32"), (5, 7, "13"), (14, 16, "61"))
DB_ID_EPOCH = date(2020, 1, 1).toordinal()

MCC_VALUES = pa.array(cat.MCC_CODES)
CURRENCY_VALUES = pa.array(cat.CURRENCIES)
COUNTRY_VALUES = pa.array(cat.COUNTRIES)
_DB_INVALID = {**cat.INVALID_VALUES, **cat.DB_INVALID_VALUES}
_SLOT = dict(invalid=1, amount=2, timestamp=3, channel=4, status=5, offset=6, grouping=7, malformed=8, last4=9, lag=10)


@dataclass
class Output:
    relpath: str
    chunks: list  # bytes-like pieces, written in order
    records: int


def _str(x: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(x, pa.int64()), pa.string())


def _pad(x: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(_str(x), width=width, padding="0")


def _join(*parts, sep: str = "") -> pa.Array:
    return pc.binary_join_element_wise(*parts, sep)


_CLOCK = "%H:%M:%S"


@lru_cache(maxsize=1)
def _clock_faces() -> pa.Array:
    """"HH:MM:SS" of every second of a day."""
    return pc.strftime(pa.array(np.arange(DAY_SECONDS), pa.int64()).cast(pa.timestamp("s")), format=_CLOCK)


def _strftime(secs: np.ndarray, fmt: str) -> pa.Array:
    """Format epoch seconds (naive wall time) as fmt = <date part>%H:%M:%S<suffix>.

    A batch spans a handful of calendar days: each day is formatted once and the
    time of day comes from a table, so the cost is two takes and a join."""
    head, tail = fmt.split(_CLOCK)
    days, inverse = np.unique(secs // DAY_SECONDS, return_inverse=True)
    day_text = pa.array([(datetime(1970, 1, 1) + timedelta(days=int(d))).strftime(head) for d in days], pa.string())
    return _join(day_text.take(inverse.ravel()), _clock_faces().take(secs % DAY_SECONDS), tail)


def _q(arr: pa.Array) -> pa.Array:
    """A JSON string token, or null."""
    return pc.if_else(pc.is_null(arr), pa.scalar("null"), _join('"', arr, '"'))


def _set(arr: pa.Array, mask: np.ndarray, values) -> pa.Array:
    """arr with the masked rows replaced (values: an array of len mask.sum(), a scalar, or None for null)."""
    count = int(mask.sum())
    if not count:
        return arr
    if values is None:
        values = pa.nulls(count, arr.type)
    elif not isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = pa.array([values] * count, arr.type)
    return pc.replace_with_mask(arr, pa.array(mask), values)


def _grouped(ip: np.ndarray, sep: str) -> pa.Array:
    """Non-negative integers with a thousands separator (1234567 -> 1.234.567)."""
    res = pc.if_else(pa.array(ip >= 1000), _pad(ip % 1000, 3), _str(ip % 1000))
    rest = ip // 1000
    while (rest > 0).any():
        part = pc.if_else(pa.array(rest >= 1000), _pad(rest % 1000, 3), _str(rest % 1000))
        res = pc.if_else(pa.array(rest > 0), _join(part, res, sep=sep), res)
        rest = rest // 1000
    return res


def format_amount(cents: np.ndarray, decimal_sep: str = ".", thousands: np.ndarray | None = None,
                  thousands_sep: str = ".") -> pa.Array:
    whole, frac = np.abs(cents) // 100, np.abs(cents) % 100
    ip = _str(whole)
    if thousands is not None and thousands.any():
        ip = pc.if_else(pa.array(thousands), _grouped(whole, thousands_sep), ip)
    text = _join(ip, _pad(frac, 2), sep=decimal_sep)
    return pc.if_else(pa.array(cents < 0), _join("-", text), text)


def _spell(index: np.ndarray, options: tuple[tuple[str, ...], ...], choice: np.ndarray) -> pa.Array:
    flat = pa.array([o for group in options for o in group])
    counts = np.array([len(g) for g in options])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return flat.take(starts[index] + choice % counts[index])


def future_shift_seconds(day: date) -> int:
    """Moves an event of `day` to the same calendar date of 2099 (well beyond any ingestion)."""
    return (date(2099, 1, 1) - date(day.year, 1, 1)).days * DAY_SECONDS


def timelines(tx: DayTransactions, recs: Records) -> tuple[np.ndarray, np.ndarray]:
    """(updated_at, produced_at) of each record: after the event, inside the day being delivered."""
    start = day_start_epoch(tx.day)
    end = start + DAY_SECONDS - 1
    ts = tx.event_ts[recs.tx]
    lag = variant(recs.detail, _SLOT["lag"], 300)
    lag = np.where(tx.status[recs.tx] == STATUSES.index("reversed"), lag + 3600 * (1 + lag % 6), lag)
    updated = np.minimum(np.where(ts < start, start + lag, ts + lag), end)
    produced = np.minimum(np.where(ts < start, start + lag % 600, ts + 1 + lag % 30), end)
    return updated, produced


class View:
    """The records of one shape, in rendering order, with canonical values and defect masks."""

    def __init__(self, tx: DayTransactions, dims: Dimensions, recs: Records, updated: np.ndarray,
                 produced: np.ndarray, event_ids: pa.Array | None = None):
        t = recs.tx
        self.n = len(t)
        self.recs = recs
        self.defect = recs.defect
        self.detail = recs.detail
        self.updated, self.produced = updated, produced
        self.event_id = event_ids.take(t) if event_ids is not None else None
        self.id = tx.transaction_id.take(t)
        card = tx.card[t]
        self.raw_pan = self.has("raw_pan")
        self.drift = self.has("type_drift")
        self.card = pc.if_else(pa.array(self.raw_pan), dims.card_pans.take(card), dims.card_tokens.take(card))
        self.last4 = pc.if_else(pa.array(self.raw_pan), dims.pan_last4.take(card), dims.card_last4.take(card))
        self.customer = dims.customer_ids.take(dims.card_customer[card])
        self.merchant = dims.merchant_ids.take(tx.merchant[t])
        self.mcc = MCC_VALUES.take(tx.mcc[t])
        self.currency = CURRENCY_VALUES.take(tx.currency[t])
        self.country = COUNTRY_VALUES.take(tx.market[t])
        self.channel = tx.channel[t]
        self.status = tx.status[t]
        self.ts = tx.event_ts[t].copy()
        self.ts[self.has("future_event_ts")] += future_shift_seconds(tx.day)
        self.cents = tx.cents[t].copy()
        nonpos = self.has("non_positive_amount")
        self.cents[nonpos] = np.where(self.variant("amount", 2)[nonpos] == 0, 0, -self.cents[nonpos])

    def has(self, defect: str) -> np.ndarray:
        return self.defect == D[defect]

    def variant(self, slot: str, k: int) -> np.ndarray:
        return variant(self.detail, _SLOT[slot], k)

    def missing(self, column: str) -> np.ndarray:
        return self.has("missing_required") & (column_choice(self.detail, MISSING_COLUMNS) == MISSING_COLUMNS.index(column))

    def invalid(self, column: str) -> np.ndarray:
        return self.has("invalid_value") & (column_choice(self.detail, INVALID_COLUMNS) == INVALID_COLUMNS.index(column))

    def value(self, column: str, rendered: pa.Array, invalid_values: dict | None = None) -> pa.Array:
        """A rendered field with the column's missing/invalid defects applied (null = missing)."""
        out = _set(rendered, self.missing(column), None)
        if column in INVALID_COLUMNS:
            bad = self.invalid(column)
            if bad.any():
                choices = (invalid_values or cat.INVALID_VALUES)[column]
                picks = self.variant("invalid", len(choices))[bad]
                out = _set(out, bad, pa.array(choices).take(picks))
        return out

    def timestamp(self, rendered: pa.Array, bad_forms) -> pa.Array:
        out = _set(rendered, self.missing("event_ts"), None)
        bad = self.has("invalid_timestamp")
        if not bad_forms or not bad.any():
            return out
        which = self.variant("timestamp", len(bad_forms))
        for k, (start, stop, text) in enumerate(bad_forms):
            rows = bad & (which == k)
            if rows.any():
                fixed = pc.utf8_replace_slice(out.filter(pa.array(rows)), start=start, stop=stop, replacement=text)
                out = _set(out, rows, fixed)
        return out

    def amount(self, rendered: pa.Array, invalid_texts: tuple[str, ...], quote_invalid: bool) -> pa.Array:
        out = _set(rendered, self.missing("amount"), None)
        bad = self.has("invalid_amount")
        if bad.any():
            texts = pa.array(invalid_texts).take(self.variant("amount", len(invalid_texts))[bad])
            out = _set(out, bad, _join('"', texts, '"') if quote_invalid else texts)
        return out


def _truncate(lines: pa.Array, mask: np.ndarray, detail: np.ndarray, as_json_string: bool = False) -> pa.Array:
    """Cut the masked JSON texts mid-object (never valid JSON again)."""
    if not mask.any():
        return lines
    cut = []
    for text, bits in zip(lines.filter(pa.array(mask)).to_pylist(), detail[mask]):
        keep = 10 + int(bits % 997) % max(1, len(text) - 20)
        cut.append(json.dumps(text[:keep]) if as_json_string else text[:keep])
    return _set(lines, mask, pa.array(cut, pa.string()))


def joined(lines: pa.Array, sep: str, trailing: bool) -> pa.Buffer:
    """The texts of an array joined by sep, as one buffer (no per-row Python)."""
    if len(lines) == 0:
        return pa.py_buffer(b"")
    with_sep = pc.binary_join_element_wise(lines.cast(pa.large_string()), pa.scalar("", pa.large_string()),
                                           pa.scalar(sep, pa.large_string()))
    offsets = np.frombuffer(with_sep.buffers()[1], dtype=np.int64)
    first, last = int(offsets[with_sep.offset]), int(offsets[with_sep.offset + len(with_sep)])
    if not trailing:
        last -= len(sep.encode())
    return with_sep.buffers()[2].slice(first, last - first)


def _csv_lines(view: View) -> pa.Array:
    v = view
    spelled_channel = pc.if_else(
        pa.array(v.drift), _spell(v.channel, cat.CSV_CHANNEL_DRIFT, v.variant("channel", 12)),
        _spell(v.channel, cat.CSV_CHANNEL, v.variant("channel", 12)))
    spelled_status = pc.if_else(
        pa.array(v.drift), _spell(v.status, cat.CSV_STATUS_DRIFT, v.variant("status", 12)),
        _spell(v.status, cat.CSV_STATUS, v.variant("status", 12)))
    country = pc.if_else(pa.array(v.drift), pc.utf8_lower(v.country), v.country)
    # Some exports group thousands ("1.234,56"), some do not ("12000,00").
    grouping = v.variant("grouping", 10) < 7
    malformed = v.has("malformed_record")
    split_decimal = malformed & (v.variant("malformed", 2) == 0)
    valor = format_amount(v.cents, ",", grouping)
    if split_decimal.any():  # a ';' as decimal separator: one column too many
        valor = _set(valor, split_decimal, format_amount(v.cents[split_decimal], ";", grouping[split_decimal]))
    last4 = _set(v.last4, v.raw_pan & (v.variant("last4", 2) == 0), None)
    fields = [
        v.id,
        v.timestamp(_strftime(v.ts + SAO_PAULO_OFFSET, "%d/%m/%Y %H:%M:%S"), BAD_BR_TIMESTAMP),
        v.value("customer_id", v.customer),
        v.value("card_token", v.card),
        last4,
        v.value("merchant_id", v.merchant),
        v.value("mcc", v.mcc),
        v.amount(valor, cat.INVALID_AMOUNTS_BR, quote_invalid=False),
        v.value("currency", v.currency),
        v.value("country", country),
        v.value("channel", spelled_channel),
        v.value("status", spelled_status),
    ]
    fields = [pc.fill_null(f, "") for f in fields]
    lines = _join(*fields, sep=";")
    truncated = malformed & ~split_decimal  # a cut-off line: three columns short
    if truncated.any():
        short = _join(*(f.filter(pa.array(truncated)) for f in fields[:9]), sep=";")
        lines = _set(lines, truncated, short)
    return lines


def render_csv(view: View, day: date) -> list[Output]:
    lines = _csv_lines(view)
    outputs = []
    for part, start in enumerate(range(0, max(view.n, 1), CSV_PART_ROWS), start=1):
        chunk = lines.slice(start, CSV_PART_ROWS)
        outputs.append(Output(
            f"s3/dt={day.isoformat()}/transactions-{day.isoformat()}-{part:03d}.csv",
            [(CSV_HEADER + "\n").encode(), joined(chunk, "\n", trailing=True)], len(chunk)))
    return outputs


def render_jsonl(view: View, day: date) -> list[Output]:
    v = view
    which = v.variant("offset", len(GATEWAY_OFFSETS))
    shift = np.array([o for o, _ in GATEWAY_OFFSETS])[which]
    suffix = pa.array([s for _, s in GATEWAY_OFFSETS]).take(which)
    occurred = v.timestamp(_join(_strftime(v.ts + shift, "%Y-%m-%dT%H:%M:%S"), suffix), BAD_ISO_TIMESTAMP)
    plain = format_amount(v.cents)
    amount = pc.if_else(pa.array(v.drift), plain, _join('"', plain, '"'))  # drift: a number instead of a string
    amount = v.amount(amount, cat.INVALID_AMOUNTS_DOT, quote_invalid=True)
    status = pa.array([s.upper() for s in STATUSES]).take(v.status)
    status = pc.if_else(pa.array(v.drift), pc.utf8_capitalize(status), status)
    token_card = _join('{"token": ', _q(v.value("card_token", v.card)), ', "last4": ', _q(v.last4), "}")
    card = pc.if_else(pa.array(v.raw_pan), _join('{"number": ', _q(v.card), "}"), token_card)
    lines = _join(
        '{"id": ', _q(v.id),
        ', "occurred_at": ', _q(occurred),
        ', "customer": {"id": ', _q(v.value("customer_id", v.customer)), "}",
        ', "card": ', card,
        ', "merchant": {"id": ', _q(v.value("merchant_id", v.merchant)),
        ', "mcc": ', _q(v.value("mcc", v.mcc)), ', "country": ', _q(v.value("country", v.country)), "}",
        ', "amount": {"value": ', pc.fill_null(amount, "null"), ', "currency": ', _q(v.value("currency", v.currency)), "}",
        ', "channel": ', _q(v.value("channel", pa.array(CHANNELS).take(v.channel))),
        ', "status": ', _q(v.value("status", status)), "}",
    )
    lines = _truncate(lines, v.has("malformed_record"), v.detail)
    return [Output(f"s3/dt={day.isoformat()}/gateway-{day.isoformat()}.jsonl", [joined(lines, "\n", True)], v.n)]


def _api_records(v: View) -> pa.Array:
    """The API record (also the Kafka payload)."""
    amount = v.amount(format_amount(v.cents), cat.INVALID_AMOUNTS_DOT, quote_invalid=True)
    created = v.timestamp(_strftime(v.ts, "%Y-%m-%dT%H:%M:%SZ"), BAD_ISO_TIMESTAMP)
    return _join(
        '{"transaction_id": ', _q(v.id),
        ', "created_at": ', _q(created),
        ', "updated_at": ', _q(_strftime(v.updated, "%Y-%m-%dT%H:%M:%SZ")),
        ', "customer_id": ', _q(v.value("customer_id", v.customer)),
        ', "card": {"token": ', _q(v.value("card_token", v.card)), ', "last4": ', _q(v.last4), "}",
        ', "merchant_id": ', _q(v.value("merchant_id", v.merchant)),
        ', "mcc": ', _q(v.value("mcc", v.mcc)),
        ', "amount": ', pc.fill_null(amount, "null"),
        ', "currency": ', _q(v.value("currency", v.currency)),
        ', "country": ', _q(v.value("country", v.country)),
        ', "channel": ', _q(v.value("channel", pa.array(CHANNELS).take(v.channel))),
        ', "status": ', _q(v.value("status", pa.array(STATUSES).take(v.status))), "}",
    )


def api_cursor(day: date, page: int) -> str:
    """Opaque cursor of a page (base64url of its position)."""
    raw = json.dumps({"dt": day.isoformat(), "page": page}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def render_api(view: View, day: date) -> list[Output]:
    records = _truncate(_api_records(view), view.has("malformed_record"), view.detail, as_json_string=True)
    pages = max(1, -(-view.n // API_PAGE_SIZE))
    outputs = []
    for page in range(1, pages + 1):
        chunk = records.slice((page - 1) * API_PAGE_SIZE, API_PAGE_SIZE)
        nxt = json.dumps(api_cursor(day, page + 1)) if page < pages else "null"
        outputs.append(Output(
            f"api/dt={day.isoformat()}/page-{page:04d}.json",
            [b'{"data": [', joined(chunk, ", ", trailing=False), f'], "next_cursor": {nxt}}}\n'.encode()],
            len(chunk)))
    return outputs


def render_db(view: View, day: date) -> list[Output]:
    v = view
    ids = (day.toordinal() - DB_ID_EPOCH) * 100_000_000 + 1 + np.arange(v.n)
    status = _spell(v.status, cat.DB_STATUS, v.variant("status", 12))
    iso = "%Y-%m-%dT%H:%M:%S-03:00"
    fields = [
        _str(ids), v.id,
        v.value("customer_id", v.customer),
        v.value("card_token", v.card),
        v.last4,
        v.value("merchant_id", v.merchant),
        v.value("mcc", v.mcc),
        v.amount(_str(v.cents), (), quote_invalid=False),
        v.value("currency", v.currency),
        v.value("country", v.country),
        v.value("channel", pa.array(cat.DB_CHANNEL).take(v.channel), _DB_INVALID),
        v.value("status", status, _DB_INVALID),
        v.timestamp(_strftime(v.ts + SAO_PAULO_OFFSET, iso), ()),
        _strftime(v.updated + SAO_PAULO_OFFSET, iso),
    ]
    lines = _join(*(pc.fill_null(f, "") for f in fields), sep=",")  # empty unquoted = NULL for COPY
    return [Output(f"db/dt={day.isoformat()}/card_transaction.csv",
                   [(DB_HEADER + "\n").encode(), joined(lines, "\n", trailing=True)], v.n)]


def render_kafka(view: View, day: date) -> list[Output]:
    v = view
    lines = _join(
        '{"event_id": ', _q(v.event_id), f', "event_type": "{KAFKA_EVENT_TYPE}"',
        ', "produced_at": ', _q(_strftime(v.produced, "%Y-%m-%dT%H:%M:%SZ")),
        ', "payload": ', _api_records(v), "}",
    )
    lines = _truncate(lines, v.has("malformed_record"), v.detail)
    return [Output(f"kafka/dt={day.isoformat()}/events.jsonl", [joined(lines, "\n", True)], v.n)]


RENDERERS = {S3_CSV: render_csv, S3_JSONL: render_jsonl, API: render_api, DB: render_db, KAFKA: render_kafka}
