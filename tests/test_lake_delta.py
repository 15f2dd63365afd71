"""The curated Delta table on a local lake under real processes: a reader during a curate sees the
old or the new day and never a mix, a curate killed in the middle of its commit leaves the previous
version readable and is finished once by its retry, a lake of the previous layout is upgraded, and
a first run without Maven Central names the packages it lacks. (On the S3 store:
tests/test_lake_delta_s3.py.)

Each curate runs as its own `glue_scripts/curate.py` process (its own JVM), as the DAG runs it;
the reader is delta-rs in this process, as the API reads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from fluxo.contract import TRANSACTION
from fluxo.lake import Lake
from fluxo_platform.lakefs import delta_history, open_delta, read_delta

from tests.curated_days import D1, D3, environment, ids_of_day, staged_day, start_curate
from tests.stage_runs import finish, run_stages, script_argv


def test_a_reader_during_a_curate_sees_the_old_or_the_new_day(tmp_path):
    lake = Lake(str(tmp_path))
    staged_day(lake, "2026-11-01", D1, "old", 20_000)
    finish(start_curate(lake, "2026-11-01"))
    old = ids_of_day(lake, D1)
    # a later ingest date brings 30k more transactions of the same event day
    staged_day(lake, "2026-11-02", D1, "new", 30_000)
    new = old | {f"new{i:07d}" for i in range(30_000)}
    proc = start_curate(lake, "2026-11-02")
    seen: list[int] = []
    while proc.poll() is None:
        got = ids_of_day(lake, D1)
        assert got in (old, new), f"a reader saw {len(got)} rows: neither the old day ({len(old)}) nor the new ({len(new)})"
        seen.append(len(got))
        time.sleep(0.05)
    finish(proc)
    assert ids_of_day(lake, D1) == new
    assert seen and seen[0] == len(old)  # the reader really read while the curate ran


def _new_data_files(lake: Lake, known: set[str]) -> list[Path]:
    root = Path(lake.curated_transactions)
    return [p for p in root.rglob("*.parquet") if str(p.relative_to(root)) not in known]


def test_a_curate_killed_mid_commit_leaves_the_previous_version_and_its_retry_lands_once(tmp_path):
    lake = Lake(str(tmp_path))
    staged_day(lake, "2026-11-01", D1, "a", 20_000)
    finish(start_curate(lake, "2026-11-01"))
    before_version = max(h["version"] for h in delta_history(lake.curated_transactions))
    before = ids_of_day(lake, D1)
    staged_day(lake, "2026-11-03", D3, "c", 40_000)
    known = {a["path"] for a in pa.table(open_delta(lake.curated_transactions).get_add_actions(flatten=True)).to_pylist()}

    proc = start_curate(lake, "2026-11-03")
    deadline = time.monotonic() + 600
    while not _new_data_files(lake, known) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the JVM too: data files written, the commit not (or half) done
    proc.wait(timeout=60)
    assert _new_data_files(lake, known), "the curate was killed before it wrote any data file"

    # the table is whole: the previous version, or (if the commit won the race) the new one
    latest = max(h["version"] for h in delta_history(lake.curated_transactions))
    assert latest in (before_version, before_version + 1)
    assert ids_of_day(lake, D1) == before
    assert len(ids_of_day(lake, D3)) in (0, 40_000)

    finish(start_curate(lake, "2026-11-03"))  # the retry
    assert len(ids_of_day(lake, D3)) == 40_000 and ids_of_day(lake, D1) == before
    rows = read_delta(lake.curated_transactions, TRANSACTION.arrow_schema())
    assert rows.num_rows == 60_000 == len(set(rows.column("transaction_id").to_pylist()))


IVY_SETTINGS_WITHOUT_NETWORK = """<ivysettings>
  <settings defaultResolver="nowhere"/>
  <resolvers><ibiblio name="nowhere" m2compatible="true" root="http://127.0.0.1:9/maven2/"/></resolvers>
</ivysettings>
"""


def test_unreachable_maven_names_the_coordinates(tmp_path):
    """A first run that cannot fetch its JVM packages (no network, empty cache) says which ones."""
    settings = tmp_path / "ivysettings.xml"
    settings.write_text(IVY_SETTINGS_WITHOUT_NETWORK)
    code = (
        "import fluxo.spark as s\n"
        "try:\n"
        f"    s.local_session('probe', s3=True, extra={{'spark.jars.ivy': {str(tmp_path / 'ivy')!r}, "
        f"'spark.jars.ivySettings': {str(settings)!r}}})\n"
        "except s.SparkJarsUnavailable as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=environment(), capture_output=True, text=True, timeout=300)
    from fluxo.spark import DELTA_PACKAGE, HADOOP_AWS_PACKAGE

    assert DELTA_PACKAGE in done.stdout and HADOOP_AWS_PACKAGE in done.stdout, (done.stdout, done.stderr[-2000:])
    assert "could not be fetched from Maven Central" in done.stdout


def test_a_lake_of_the_previous_version_is_upgraded_without_losing_rows(tmp_path, spark):
    """Curated Parquet folders (the previous layout) become the Delta table in place; the outlier
    history delta-rs wrote takes Spark's MERGE; curating goes on from there."""
    import pyarrow.dataset as pads
    from deltalake import write_deltalake

    from fluxo.contract import OUTLIER
    from fluxo.history import merge_flagged

    lake = Lake(str(tmp_path))
    old = pa.Table.from_pylist([
        {**{c: None for c in TRANSACTION.names}, "transaction_id": f"old{i}", "source": "s3",
         "event_ts": datetime(2026, 10, 1 + i % 2, 12, tzinfo=timezone.utc), "customer_id": "C1", "card_token": "tok_a",
         "merchant_id": "M1", "mcc": "5411", "amount": Decimal("9.99"), "currency": "BRL",
         "amount_reporting": Decimal("9.99"), "country": "BR", "channel": "pos", "status": "approved",
         "batch_id": "b0", "ingested_at": datetime(2026, 10, 3, tzinfo=timezone.utc)} for i in range(10)
    ], schema=TRANSACTION.arrow_schema())
    days = pa.array([ts.date() for ts in old.column("event_ts").to_pylist()], pa.date32())
    pads.write_dataset(old.append_column("event_date", days), lake.curated_transactions, format="parquet",
                       partitioning=pads.partitioning(pa.schema([("event_date", pa.date32())]), flavor="hive"))
    flagged = pa.Table.from_pylist([{
        "transaction_id": "old1", "event_ts": datetime(2026, 10, 2, 12, tzinfo=timezone.utc),
        "event_date": date(2026, 10, 2), "customer_id": "C1", "merchant_id": "M1", "mcc": "5411", "currency": "BRL",
        "amount": Decimal("9.99"), "amount_reporting": Decimal("9.99"), "method": "mad_zscore", "score": 9.0,
        "threshold": 3.5, "baseline": 1.0, "scale": 0.1, "detected_at": datetime(2026, 10, 3, tzinfo=timezone.utc),
        "run_id": "old-run"}], schema=OUTLIER.arrow_schema())
    write_deltalake(lake.outlier_history, flagged, partition_by=["event_date"])

    staged_day(lake, "2026-11-01", D1, "new", 1_000)
    upgrade = script_argv("upgrade_lake", lake_root=lake.root)
    done = run_stages(upgrade, upgrade, script_argv("curate", lake_root=lake.root, ingest_date="2026-11-01"),
                      env=environment())
    assert "converted" in done.stdout and "already a Delta table" in done.stdout
    rows = read_delta(lake.curated_transactions, TRANSACTION.arrow_schema())
    ids = rows.column("transaction_id").to_pylist()
    assert len(ids) == 1_010 == len(set(ids)) and {f"old{i}" for i in range(10)} <= set(ids)

    again = spark.createDataFrame(flagged.to_pandas(), OUTLIER.spark_schema())
    assert merge_flagged(spark, lake.outlier_history, again, [], {"stage": "test"})["inserted"] == 0
