"""Which record goes where, and what is wrong with it.

Each transaction of a day is rendered once in its primary shape; a transaction
draws at most one defect kind, so a quarantined record is the only rendering of
its transaction and the first failing check is exactly the planted one. Planted
fraud and outliers stay clean so the ground truth always holds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fluxo.sources import SOURCE_NAMES, shape_source

from .universe import DayTransactions, day_start_epoch, pick

# The raw shapes of fluxo.sources the generator renders (s3 JSON documents are left to hostile-file tests).
SHAPES = ("s3_csv", "s3_jsonl", "api", "db", "kafka")
S3_CSV, S3_JSONL, API, DB, KAFKA = range(len(SHAPES))
SHAPE_SOURCE = tuple(shape_source(shape).name for shape in SHAPES)
SHAPE_SHARE = (0.35, 0.15, 0.20, 0.15, 0.15)
# Where a transaction seen in one shape shows up a second time.
CROSS_PARTNERS = {S3_CSV: (S3_JSONL, API, KAFKA), S3_JSONL: (S3_CSV, KAFKA), API: (KAFKA, S3_CSV, DB), DB: (API,), KAFKA: (API, DB)}

DEFECTS = (
    "duplicate_within", "duplicate_cross", "missing_required", "malformed_record", "invalid_amount",
    "non_positive_amount", "invalid_timestamp", "future_event_ts", "invalid_value", "raw_pan", "type_drift",
    "late_event", "redelivery",
)
D = {name: i for i, name in enumerate(DEFECTS)}
NONE = -1
DEFAULT_DEFECT_RATES = {
    "duplicate_within": 0.01, "duplicate_cross": 0.01, "missing_required": 0.008, "malformed_record": 0.005,
    "invalid_amount": 0.005, "non_positive_amount": 0.005, "invalid_timestamp": 0.005, "future_event_ts": 0.005,
    "invalid_value": 0.008, "raw_pan": 0.008, "type_drift": 0.01, "late_event": 0.01, "redelivery": 0.01,
}
_ALL = set(DEFECTS)
# A typed OLTP table cannot hold malformed rows, unparseable amounts or impossible
# dates; only s3 files have free-form spellings; only Kafka redelivers.
APPLICABLE = {
    "s3": _ALL - {"redelivery"},
    "api": _ALL - {"redelivery", "type_drift"},
    "db": {"duplicate_within", "duplicate_cross", "missing_required", "non_positive_amount", "future_event_ts",
           "invalid_value", "raw_pan", "late_event"},
    "kafka": _ALL - {"duplicate_within", "type_drift"},
}
QUARANTINED = {"missing_required", "malformed_record", "invalid_amount", "non_positive_amount", "invalid_timestamp",
               "future_event_ts", "invalid_value"}
# Defects carried by an extra record of the transaction (the first record stays clean).
EXTRA_RECORD = {"duplicate_within", "duplicate_cross", "redelivery"}
MISSING_COLUMNS = ("event_ts", "customer_id", "card_token", "merchant_id", "mcc", "amount", "currency", "country",
                   "channel", "status")
INVALID_COLUMNS = ("channel", "status", "currency", "country", "mcc")
SOURCES = SOURCE_NAMES


def resolve_rates(defect_rates: Mapping[str, object] | None = None) -> dict[str, dict[str, float]]:
    """Per-source defect rates: defaults, then top-level `{defect: rate}` overrides
    (applied where the defect makes sense), then `{source: {defect: rate}}`."""
    defect_rates = dict(defect_rates or {})
    base = dict(DEFAULT_DEFECT_RATES)
    for key, value in list(defect_rates.items()):
        if key in D:
            base[key] = float(value)  # type: ignore[arg-type]
            del defect_rates[key]
    rates = {src: {d: base[d] for d in DEFECTS if d in APPLICABLE[src]} for src in SOURCES}
    for src, overrides in defect_rates.items():
        if src not in rates or not isinstance(overrides, Mapping):
            raise ValueError(f"unknown defect or source {src!r} in defect_rates")
        for d, value in overrides.items():
            if d not in APPLICABLE[src]:
                raise ValueError(f"defect {d!r} does not apply to source {src!r}")
            rates[src][d] = float(value)
    for src, r in rates.items():
        if any(v < 0 for v in r.values()) or sum(r.values()) >= 1:
            raise ValueError(f"defect rates of {src} must be >= 0 and sum below 1: {r}")
    return rates


@dataclass
class Records:
    """Every rendered record of a day (before rendering order is fixed)."""

    tx: np.ndarray  # index into DayTransactions
    shape: np.ndarray
    defect: np.ndarray  # index into DEFECTS or NONE
    detail: np.ndarray  # per-transaction random bits: which column, which spelling
    lag: np.ndarray  # seconds a redelivered message trails the original

    def __len__(self) -> int:
        return len(self.tx)

    def take(self, idx: np.ndarray) -> "Records":
        return Records(self.tx[idx], self.shape[idx], self.defect[idx], self.detail[idx], self.lag[idx])


@dataclass
class Assignment:
    records: Records
    kind: np.ndarray  # per transaction: the defect kind drawn (or NONE)
    primary: np.ndarray  # per transaction: its primary shape
    detail: np.ndarray


def assign(rng: np.random.Generator, tx: DayTransactions, rates: dict[str, dict[str, float]],
           rendered_shapes: tuple[int, ...] = tuple(range(len(SHAPES)))) -> Assignment:
    n = len(tx)
    primary = pick(rng, np.cumsum(SHAPE_SHARE), n)
    detail = rng.integers(0, 2**62, n, dtype=np.int64)
    # A planted fraud scenario arrives whole even when only some sources are rendered: a burst
    # with half its rows in an unrendered source is no longer the pattern its label claims.
    # (The detail's top bits pick the shape; the draws stay the same, so a full render is unchanged.)
    lost = tx.in_scenario & ~np.isin(primary, rendered_shapes)
    primary[lost] = np.asarray(rendered_shapes)[(detail[lost] >> 58) % len(rendered_shapes)]
    kind = np.full(n, NONE, dtype=np.int64)
    u = rng.random(n)
    for shape, source in enumerate(SHAPE_SOURCE):
        rows = np.flatnonzero(primary == shape)
        table = [(D[d], r) for d, r in rates[source].items() if r > 0]
        if not table or not len(rows):
            continue
        codes = np.array([c for c, _ in table])
        cdf = np.cumsum([r for _, r in table])
        hit = np.searchsorted(cdf, u[rows], side="right")
        drawn = hit < len(codes)
        kind[rows[drawn]] = codes[hit[drawn]]
    kind[tx.planted] = NONE

    # Late events happened yesterday (UTC) and arrive in today's files.
    late = np.flatnonzero(kind == D["late_event"])
    tx.event_ts[late] = day_start_epoch(tx.day) - rng.integers(60, 6 * 3600, len(late))

    on_record = (kind != NONE) & ~np.isin(kind, [D[d] for d in EXTRA_RECORD])
    first = Records(
        tx=np.arange(n), shape=primary.astype(np.int64), defect=np.where(on_record, kind, NONE),
        detail=detail, lag=np.zeros(n, dtype=np.int64),
    )
    extra_rows = np.flatnonzero(np.isin(kind, [D[d] for d in EXTRA_RECORD]))
    extra_shape = primary[extra_rows].astype(np.int64)
    cross = kind[extra_rows] == D["duplicate_cross"]
    for shape, partners in CROSS_PARTNERS.items():
        rows = cross & (primary[extra_rows] == shape)
        extra_shape[rows] = np.array(partners)[detail[extra_rows[rows]] % len(partners)]
    extra = Records(
        tx=extra_rows, shape=extra_shape, defect=kind[extra_rows], detail=detail[extra_rows],
        lag=np.where(kind[extra_rows] == D["redelivery"], rng.integers(30, 1800, len(extra_rows)), 0),
    )
    records = Records(*(np.concatenate([getattr(first, f), getattr(extra, f)]) for f in Records.__dataclass_fields__))
    return Assignment(records=records, kind=kind, primary=primary, detail=detail)


def defect_label(defect: np.ndarray, detail: np.ndarray) -> list[str | None]:
    """The label name of each record's defect, with the column where there is one."""
    labels: list[str | None] = [None] * len(defect)
    for i in np.flatnonzero(defect != NONE):
        name = DEFECTS[defect[i]]
        if name == "missing_required":
            name += ":" + MISSING_COLUMNS[column_choice(detail[i], MISSING_COLUMNS)]
        elif name == "invalid_value":
            name += ":" + INVALID_COLUMNS[column_choice(detail[i], INVALID_COLUMNS)]
        labels[i] = name
    return labels


def column_choice(detail, columns) -> np.ndarray:
    return detail % len(columns)


def variant(detail, slot: int, k: int):
    """An independent small choice drawn from the record's random bits."""
    return (detail >> (4 + 5 * slot)) % k

