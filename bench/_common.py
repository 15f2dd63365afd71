"""What the benchmarks share: their own services, and sizing a day by s3 records."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in (REPO_ROOT, REPO_ROOT / "plugins"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


@contextmanager
def bench_services(name: str, keep_home: bool = False, lake_root: str | None = None) -> Iterator[Path]:
    """Fresh local services in a home of their own (.fluxo/<name>), so the demo's data is untouched.

    Sets FLUXO_HOME, FLUXO_LAKE_ROOT (`lake_root`, else <home>/lake) and the services'
    variables in os.environ; stops the services at the end and removes the home (generated
    data, landed copies) unless `keep_home`."""
    home = REPO_ROOT / ".fluxo" / name
    os.environ["FLUXO_HOME"] = str(home)
    os.environ["FLUXO_LAKE_ROOT"] = lake_root or str(home / "lake")
    from fluxo_platform.settings import get_settings
    from fluxo_dev.stack import Stack

    Stack(home=home).down()
    shutil.rmtree(home, ignore_errors=True)
    try:
        os.environ.update(Stack(home=home).up())
        get_settings.cache_clear()
        yield home
    finally:
        Stack(home=home).down()
        if not keep_home:
            shutil.rmtree(home, ignore_errors=True)


def rows_per_day_for(records: int, source: str, work: Path, day: date, seed: int, **generate_kwargs) -> int:
    """Generated transactions per day that put about `records` records into the day's `source` shape.

    The generator spreads transactions over four sources and plants duplicates and defects,
    so a small calibration day measures the source's share first."""
    from fluxo_dev.generator import generate

    sample = generate(work / "calibration", day, days=1, rows_per_day=20_000, seed=seed, sources=(source,),
                      **generate_kwargs)
    shutil.rmtree(work / "calibration", ignore_errors=True)
    return round(records / (sample["records"] / 20_000))


def curated_from_truth(truth, ingested_at):
    """The generator's canonical truth as curated rows (TRANSACTION, lineage filled in) plus event_date."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from fluxo.contract import TRANSACTION

    n = truth.num_rows
    ts = pa.timestamp("us", tz="UTC")
    lineage = {
        "source": pa.nulls(n, pa.string()).fill_null("s3"),
        "batch_id": pa.nulls(n, pa.string()).fill_null("bench"),
        "ingested_at": pa.nulls(n, ts).fill_null(pa.scalar(ingested_at, ts)),
    }
    curated = pa.Table.from_arrays([lineage[c] if c in lineage else truth.column(c) for c in TRANSACTION.names],
                                   schema=TRANSACTION.arrow_schema())
    return curated.append_column(
        "event_date", pc.cast(pc.cast(curated.column("event_ts"), pa.timestamp("us")), pa.date32()))


def run_glue_script(script: str, lake_root: Path, ingest_date: str, *args: str, driver_memory: str = "4g",
                    shuffle_partitions: int = 8, spark_remote: str | None = None) -> tuple[float, dict]:
    """`glue_scripts/<script>.py` in a JVM of its own (as a Glue run: start included), or on the
    Spark Connect server `spark_remote` (as a local stage of the DAG runs), on a local lake;
    (wall seconds, its results document). Exits with the stage's stderr tail when it fails."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), FLUXO_SPARK_MASTER="local[2]",
               FLUXO_SPARK_DRIVER_MEMORY=driver_memory, FLUXO_SPARK_SHUFFLE_PARTITIONS=str(shuffle_partitions))
    env.pop("PYSPARK_GATEWAY_PORT", None)
    env.pop("FLUXO_SPARK_REMOTE", None)
    if spark_remote:
        env["FLUXO_SPARK_REMOTE"] = spark_remote
    argv = [sys.executable, str(REPO_ROOT / "glue_scripts" / f"{script}.py"), "--JOB_NAME", script,
            "--lake_root", str(lake_root), "--ingest_date", ingest_date, "--run_id", "bench", *args]
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    stats = json.loads((lake_root / "work" / "stats" / f"ingest_date={ingest_date}" / f"{script}.json").read_text())
    return elapsed, stats
