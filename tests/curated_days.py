"""Staged days for curate runs in their own JVMs, and the curated table's days read back (delta-rs),
for the Delta lake tests (tests/test_lake_delta*.py)."""

from __future__ import annotations

import subprocess
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from fluxo.contract import TRANSACTION
from fluxo.lake import Lake
from fluxo_platform.lakefs import read_delta

from tests.stage_runs import script_argv, stage_environment, start_stages


def staged_day(lake: Lake, ingest_date: str, event_day: date, prefix: str, n: int) -> None:
    """A staged batch of n transactions dated event_day, written as standardize leaves it (a local
    or an S3 lake)."""
    from fluxo_platform.lakefs import resolve

    start = datetime.combine(event_day, datetime.min.time(), timezone.utc)
    landed = datetime.fromisoformat(ingest_date).replace(tzinfo=timezone.utc) + timedelta(hours=3)
    rows = {
        "transaction_id": [f"{prefix}{i:07d}" for i in range(n)],
        "source": ["s3"] * n,
        "event_ts": [start + timedelta(seconds=i % 86_000) for i in range(n)],
        "customer_id": [f"C{i % 977}" for i in range(n)],
        "card_token": [f"tok_{i % 3001}" for i in range(n)],
        "card_last4": ["1234"] * n,
        "merchant_id": [f"M{i % 89}" for i in range(n)],
        "mcc": ["5411"] * n,
        "amount": [Decimal(f"{10 + i % 500}.25") for i in range(n)],
        "currency": ["BRL"] * n,
        "amount_reporting": [Decimal(f"{10 + i % 500}.25") for i in range(n)],
        "country": ["BR"] * n,
        "channel": ["pos"] * n,
        "status": ["approved"] * n,
        "batch_id": [f"b-{ingest_date}"] * n,
        "ingested_at": [landed] * n,
    }
    fs, folder = resolve(lake.staged(ingest_date))
    fs.create_dir(folder, recursive=True)
    table = pa.Table.from_pydict(rows, schema=TRANSACTION.arrow_schema())
    # several files, so a reader that listed files could see part of a day
    for part in range(4):
        chunk = table.slice(part * n // 4, n // 4 if part < 3 else n - 3 * (n // 4))
        pq.write_table(chunk, f"{folder}/part-{part}.parquet", filesystem=fs)


def environment() -> dict[str, str]:
    """Each stage in a JVM of its own, as two AWS Glue jobs are (and as a kill really kills it): not on
    the stack's shared Spark Connect server."""
    env = stage_environment(FLUXO_SPARK_MASTER="local[1]", FLUXO_SPARK_SHUFFLE_PARTITIONS="4")
    env.pop("FLUXO_SPARK_REMOTE", None)
    return env


def start_curate(lake: Lake, *ingest_dates: str) -> subprocess.Popen:
    """One process (one JVM) curating the ingest dates one after another, as the DAG would."""
    return start_stages(*(script_argv("curate", lake_root=lake.root, ingest_date=d) for d in ingest_dates),
                        env=environment())


def ids_of_day(lake: Lake, day: date, version: int | None = None) -> set[str]:
    rows = read_delta(lake.curated_transactions, TRANSACTION.arrow_schema(), version,
                      filters=[("event_date", "=", day)])
    return set(rows.column("transaction_id").to_pylist())


D1, D2, D3 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)
