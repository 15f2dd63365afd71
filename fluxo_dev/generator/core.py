"""Orchestration: days -> canonical transactions -> records -> files, labels, truth, manifest."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fluxo.contract import CHANNELS, STATUSES, TRANSACTION
from fluxo.tokenize import DEFAULT_TOKEN_SALT
from fluxo.tokenize import token_salt as default_token_salt

from . import catalog as cat
from .defects import (
    API, DEFECTS, KAFKA, NONE, QUARANTINED, SHAPE_SOURCE, SHAPES, SOURCES, D, assign, defect_label,
    resolve_rates,
)
from .render import COUNTRY_VALUES, CURRENCY_VALUES, MCC_VALUES, RENDERERS, View, timelines
from .universe import FRAUD_PATTERNS, build_day, build_dimensions, fx_scaled, uuid4_strings

GENERATOR_VERSION = 1
LINEAGE_COLUMNS = ("source", "batch_id", "ingested_at")
PROGRESS_EVERY = 250_000
RENDER_THREADS = 2
LABELS_SCHEMA = pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("file", pa.string(), nullable=False),
    pa.field("record_no", pa.int64(), nullable=False),
    pa.field("transaction_id", pa.string(), nullable=False),
    pa.field("defect", pa.string()),
    pa.field("expected", pa.string(), nullable=False),
    pa.field("expected_reason", pa.string()),
])
_QUARANTINED_CODES = [D[d] for d in QUARANTINED]


def truth_schema() -> pa.Schema:
    """The contract's columns minus lineage, plus the planted ground truth."""
    schema = TRANSACTION.arrow_schema()
    for name in LINEAGE_COLUMNS:
        schema = schema.remove(schema.get_field_index(name))
    return (schema.append(pa.field("fraud_pattern", pa.string())).append(pa.field("near_miss", pa.string()))
            .append(pa.field("is_outlier", pa.bool_(), nullable=False)))


def cents_to_decimal(cents: np.ndarray) -> pa.Array:
    """int64 minor units as decimal128(18,2), built from the 128-bit words directly."""
    cents = np.asarray(cents, dtype=np.int64)
    words = np.empty((len(cents), 2), dtype=np.int64)
    words[:, 0] = cents
    words[:, 1] = cents >> 63  # sign extension
    return pa.Array.from_buffers(pa.decimal128(18, 2), len(cents), [None, pa.py_buffer(words.tobytes())])


def parse_sources(sources: str | Iterable[str]) -> tuple[str, ...]:
    items = [s.strip() for s in (sources.split(",") if isinstance(sources, str) else sources) if s.strip()]
    unknown = set(items) - set(SOURCES)
    if unknown or not items:
        raise ValueError(f"sources must be a non-empty subset of {SOURCES}, got {items}")
    return tuple(s for s in SOURCES if s in items)


def _sort_key(shape: int, ts: np.ndarray, updated: np.ndarray, produced: np.ndarray, lag: np.ndarray) -> np.ndarray:
    if shape == API:
        return updated  # cursor pagination walks updated_at
    if shape == KAFKA:
        return produced + lag  # a redelivery shows up again later in the log
    return ts


def _write(out_dir: Path, relpath: str, chunks: list) -> None:
    path = out_dir / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


def canonical_days(days: Mapping[date, int], seed: int = 42, universe_rows: int | None = None,
                   token_salt: str = "bench") -> pa.Table:
    """The ground truth only (canonical transactions, no source files, no defects) of each day with
    its own number of transactions, in one universe of cards and customers sized for
    `universe_rows` a day (default: the largest day): a scored day with its lighter history."""
    fx = fx_scaled(cat.load_fx_rates())
    dims = build_dimensions(seed, universe_rows or max(days.values()), token_salt)
    parts = []
    for day, rows in sorted(days.items()):
        tx = build_day(dims, day, rows, seed, fx)
        parts.append(_truth(tx, dims, np.full(len(tx), NONE), np.ones(len(tx), dtype=bool), fx))
    return pa.concat_tables(parts)


def generate(
    out_dir: Path,
    start: date,
    days: int,
    rows_per_day: int,
    seed: int = 42,
    sources: str | Iterable[str] = ("s3", "api", "db", "kafka"),
    *,
    defect_rates: Mapping[str, object] | None = None,
    token_salt: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Render `days` days of `rows_per_day` transactions each, with labels, truth and manifest.

    `rows_per_day` counts distinct transactions; duplicates and redeliveries add
    records on top. The same seed always yields byte-identical files.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    sources = parse_sources(sources)
    salt = default_token_salt() if token_salt is None else token_salt
    rates = resolve_rates(defect_rates)
    fx = fx_scaled(cat.load_fx_rates())
    dims = build_dimensions(seed, rows_per_day, salt)
    # Labels describe every file under out_dir: leftovers of an earlier run would be unlabelled.
    for stale in (*SOURCES, "truth", "labels"):
        shutil.rmtree(out_dir / stale, ignore_errors=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    truth_parts: list[pa.Table] = []
    label_parts: list[pa.Table] = []
    per_day: dict[str, dict] = {}
    total_records = 0
    next_progress = PROGRESS_EVERY

    shapes = tuple(shape for shape in range(len(SHAPES)) if SHAPE_SOURCE[shape] in sources)
    for offset in range(days):
        day = start + timedelta(days=offset)
        tx = build_day(dims, day, rows_per_day, seed, fx)
        assignment = assign(np.random.default_rng([seed, day.toordinal(), 1]), tx, rates, shapes)
        recs = assignment.records
        event_ids = uuid4_strings(np.random.default_rng([seed, day.toordinal(), 2]), len(tx))
        updated, produced = timelines(tx, recs)
        ts = tx.event_ts[recs.tx]
        rendered = np.zeros(len(tx), dtype=bool)
        day_summary = {s: {"records": 0, "shapes": {}, "files": [], "defects": Counter(), "expected_valid": 0,
                           "expected_quarantined": 0} for s in sources}
        valid_tx = {s: np.zeros(len(tx), dtype=bool) for s in sources}

        def render(shape: int):
            sel = np.flatnonzero(recs.shape == shape)
            key = _sort_key(shape, ts, updated, produced, recs.lag)[sel]
            order = sel[np.lexsort((sel, key))]
            sub = recs.take(order)
            outputs = RENDERERS[shape](View(tx, dims, sub, updated[order], produced[order], event_ids), day)
            for out in outputs:
                _write(out_dir, out.relpath, out.chunks)
                out.chunks = []
            return sub, outputs

        # pyarrow compute releases the GIL: the shapes render side by side.
        with ThreadPoolExecutor(max_workers=RENDER_THREADS) as pool:
            for shape, (sub, outputs) in zip(shapes, pool.map(render, shapes)):
                source, name = SHAPE_SOURCE[shape], SHAPES[shape]
                rendered[sub.tx] = True

                quarantined = np.isin(sub.defect, _QUARANTINED_CODES)
                label_parts.append(_labels(source, outputs, sub, tx.transaction_id, quarantined))
                s = day_summary[source]
                s["records"] += len(sub)
                s["shapes"][name] = len(sub)
                s["files"] += [o.relpath for o in outputs]
                s["defects"].update(Counter(DEFECTS[d] for d in sub.defect[sub.defect != NONE]))
                n_quarantined = int(np.count_nonzero(quarantined))
                s["expected_valid"] += len(sub) - n_quarantined
                s["expected_quarantined"] += n_quarantined
                valid_tx[source][sub.tx[~quarantined]] = True
                total_records += len(sub)
                if progress and total_records >= next_progress:
                    rate = total_records / (time.perf_counter() - started)
                    progress(f"[generator] {day} {name}: {total_records:,} records so far ({rate:,.0f} records/s)")
                    next_progress = (total_records // PROGRESS_EVERY + 1) * PROGRESS_EVERY

        valid = rendered & ~np.isin(assignment.kind, _QUARANTINED_CODES)
        truth_parts.append(_truth(tx, dims, assignment.kind, valid, fx))
        for source, summary in day_summary.items():
            summary["defects"] = dict(sorted(summary["defects"].items()))
            summary["distinct_valid_transactions"] = int(np.count_nonzero(valid_tx[source]))
        per_day[day.isoformat()] = day_summary

    labels = pa.concat_tables(label_parts) if label_parts else LABELS_SCHEMA.empty_table()
    truth = pa.concat_tables(truth_parts) if truth_parts else truth_schema().empty_table()
    for sub_dir, table, name in (("truth", truth, "transactions.parquet"), ("labels", labels, "labels.parquet")):
        (out_dir / sub_dir).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out_dir / sub_dir / name)

    manifest = _manifest(out_dir, start, days, rows_per_day, seed, sources, rates, token_salt, salt, per_day, labels,
                         truth)
    elapsed = time.perf_counter() - started
    return {
        "out_dir": str(out_dir),
        "days": manifest["days"],
        "records": labels.num_rows,
        "truth_rows": truth.num_rows,
        "elapsed_seconds": round(elapsed, 3),
        "records_per_second": round(labels.num_rows / elapsed) if elapsed else None,
    }


def _labels(source: str, outputs: list, sub, transaction_ids: pa.Array, quarantined: np.ndarray) -> pa.Table:
    """One label row per rendered record, in file order."""
    counts = np.array([o.records for o in outputs])
    defects = pa.array(defect_label(sub.defect, sub.detail), pa.string())
    mask = pa.array(quarantined)
    return pa.Table.from_arrays([
        pa.array(np.full(len(sub), source)),
        pa.array([o.relpath for o in outputs]).take(np.repeat(np.arange(len(outputs)), counts)),
        pa.array(np.arange(len(sub)) + 1 - np.repeat(np.cumsum(counts) - counts, counts), pa.int64()),
        transaction_ids.take(sub.tx),
        defects,
        pc.if_else(mask, "quarantined", "valid"),
        pc.if_else(mask, defects, pa.scalar(None, pa.string())),
    ], schema=LABELS_SCHEMA)


def _truth(tx, dims, kind: np.ndarray, valid: np.ndarray, fx) -> pa.Table:
    idx = np.flatnonzero(valid)
    card = tx.card[idx]
    raw_pan = kind[idx] == D["raw_pan"]
    reporting = tx.reporting_cents(fx)[idx]
    fraud = pa.array(list(FRAUD_PATTERNS), pa.string()).take(tx.fraud[idx].astype(np.int64))
    last4 = pc.if_else(pa.array(raw_pan), dims.pan_last4.take(card), dims.card_last4.take(card))
    columns = {
        "transaction_id": tx.transaction_id.take(idx),
        "event_ts": pa.array(tx.event_ts[idx] * 1_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "customer_id": dims.customer_ids.take(dims.card_customer[card]),
        "card_token": dims.card_tokens.take(card),
        "card_last4": last4,
        "merchant_id": dims.merchant_ids.take(tx.merchant[idx]),
        "mcc": MCC_VALUES.take(tx.mcc[idx]),
        "amount": cents_to_decimal(tx.cents[idx]),
        "currency": CURRENCY_VALUES.take(tx.currency[idx]),
        "amount_reporting": cents_to_decimal(reporting),
        "country": COUNTRY_VALUES.take(tx.market[idx]),
        "channel": pa.array(CHANNELS).take(tx.channel[idx]),
        "status": pa.array(STATUSES).take(tx.status[idx]),
        "fraud_pattern": fraud,
        "near_miss": pa.array(list(FRAUD_PATTERNS), pa.string()).take(tx.near_miss[idx].astype(np.int64)),
        "is_outlier": pa.array(tx.is_outlier(fx)[idx]),
    }
    schema = truth_schema()
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def _manifest(out_dir, start, days, rows_per_day, seed, sources, rates, token_salt, salt, per_day, labels, truth) -> dict:
    by_defect = Counter()
    for summary in (s for day in per_day.values() for s in day.values()):
        by_defect.update(summary["defects"])
    expected = Counter({e: sum(s[f"expected_{e}"] for day in per_day.values() for s in day.values())
                        for e in ("valid", "quarantined")})
    fraud = truth.column("fraud_pattern").value_counts().to_pylist()
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "parameters": {
            "start": start.isoformat(), "days": days, "rows_per_day": rows_per_day, "seed": seed,
            "sources": list(sources), "defect_rates": rates, "reporting_currency": "BRL",
            "token_salt": "explicit" if token_salt is not None else
                          ("development default" if salt == DEFAULT_TOKEN_SALT else "FLUXO_TOKEN_SALT"),
        },
        "days": per_day,
        "labels": {"records": labels.num_rows, "by_defect": dict(sorted(by_defect.items())), "expected": dict(expected)},
        "truth": {
            "transactions": truth.num_rows,
            "fraud_patterns": dict(sorted((f["values"], f["counts"]) for f in fraud if f["values"])),
            "outliers": int(pc.sum(truth.column("is_outlier")).as_py() or 0),
        },
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def upload_landing(out_dir: Path, days: list[date] | None = None, settings=None) -> list[str]:
    """Put the s3-shaped files into s3://<landing_bucket>/<landing_prefix>/dt=YYYY-MM-DD/<file>."""
    import boto3
    from botocore.exceptions import ClientError

    if settings is None:
        from fluxo_platform.settings import get_settings

        settings = get_settings()
    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint or None,
        aws_access_key_id=settings.s3_access_key or None,
        aws_secret_access_key=settings.s3_secret_key or None,
        region_name=settings.aws_region,
    )
    bucket = settings.landing_bucket
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError:
        extra = {} if settings.aws_region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": settings.aws_region}}
        client.create_bucket(Bucket=bucket, **extra)
    wanted = None if days is None else {d.isoformat() for d in days}
    prefix = settings.landing_prefix.strip("/")
    keys = []
    for day_dir in sorted((Path(out_dir) / "s3").glob("dt=*")):
        if wanted is not None and day_dir.name[3:] not in wanted:
            continue
        for path in sorted(p for p in day_dir.iterdir() if p.is_file()):
            key = f"{prefix}/{day_dir.name}/{path.name}" if prefix else f"{day_dir.name}/{path.name}"
            client.upload_file(str(path), bucket, key)
            keys.append(key)
    return keys


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

