"""The curated Delta table under real processes: concurrent curates of different days both land,
a reader during a curate sees the old or the new day and never a mix, and a curate killed in
the middle of its commit leaves the previous version readable and is finished once by its retry.

Each curate runs as its own `glue_scripts/curate.py` process (its own JVM), as the DAG runs it;
the reader is delta-rs in this process, as the API reads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fluxo.contract import TRANSACTION
from fluxo.lake import Lake
from fluxo_platform.lakefs import delta_history, open_delta, read_delta

from tests.stage_runs import REPO, finish, run_stages, script_argv, stage_environment, start_stages


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


@pytest.fixture()
def s3_lake(stack_env) -> Lake:
    """A lake of its own in the local S3 server (the default lake of the stack)."""
    from fluxo_dev.stack.s3 import LAKE_BUCKET

    return Lake(f"s3://{LAKE_BUCKET}/delta-tests-{uuid.uuid4().hex[:8]}")


def test_concurrent_curates_of_different_days_all_land_on_s3(s3_lake):
    lake = s3_lake
    days = {f"2026-11-0{i}": date(2026, 11, i) for i in range(1, 7)}
    for ingest, day in days.items():
        staged_day(lake, ingest, day, f"t{day.day}-", 2_000)
    # two processes (two JVMs, as two Glue jobs) on an empty lake: they race to create the table,
    # then their commits interleave
    first, second = start_curate(lake, *list(days)[:3]), start_curate(lake, *list(days)[3:])
    finish(first)
    finish(second)
    for day in days.values():
        assert len(ids_of_day(lake, day)) == 2_000, day
    merges = [h for h in delta_history(lake.curated_transactions) if h["operation"] == "MERGE"]
    assert len(merges) == 6


def test_two_processes_committing_at_the_same_instant_lose_nothing_on_s3(s3_lake):
    """The race Delta's single-driver S3 log store loses (one of two commits silently gone) while
    the conditional-PUT log store keeps both: two JVMs commit to one table at the same instant."""
    table = f"{s3_lake.root}/race"
    rounds = 8
    with tempfile.TemporaryDirectory() as barrier:
        workers = [subprocess.Popen([sys.executable, str(REPO / "tests" / "delta_commit_race.py"), table, str(w),
                                     str(rounds), barrier], env=environment(), cwd=REPO,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in (0, 1)]
        for worker in workers:
            out, err = worker.communicate(timeout=600)
            assert worker.returncode == 0, err[-3000:]
        claimed = [json.loads(line) for w in (0, 1) for line in (Path(barrier) / f"w{w}.jsonl").read_text().splitlines()]
    history = delta_history(table)
    in_log = {h["user_metadata"] for h in history}
    assert len(claimed) == 2 * rounds
    assert {c["marker"] for c in claimed} <= in_log, "a commit its writer was told succeeded is not in the table"
    assert len({c["version"] for c in claimed}) == 2 * rounds  # no version was handed to both writers


class S3Outage:
    """A TCP relay in front of the stack's S3 server that can go down (every connection cut, new ones
    refused) and come back on the same port: the S3 server stopped and restarted, as a stage sees it."""

    def __init__(self, upstream: str):
        import socket
        from urllib.parse import urlparse

        target = urlparse(upstream)
        self.upstream = (target.hostname, target.port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._sockets: list = []
        self._listener = None

    def up(self) -> None:
        import socket
        import threading

        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def down(self) -> None:
        import socket

        self._listener.close()
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except OSError:
                pass
        self._sockets.clear()

    def _accept(self, listener) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, target) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass


def test_the_s3_store_stopped_mid_run_fails_the_stage_clearly_and_a_retry_after_restart_lands_once(s3_lake, stack_env):
    lake, day = s3_lake, date(2026, 11, 7)
    staged_day(lake, "2026-11-07", day, "s3down-", 20_000)
    outage = S3Outage(stack_env["FLUXO_S3_ENDPOINT"])
    outage.up()
    env = {**environment(), "FLUXO_S3_ENDPOINT": outage.endpoint}
    try:
        curate = start_stages(script_argv("curate", lake_root=lake.root, ingest_date="2026-11-07"), env=env)
        deadline = time.monotonic() + 300
        while outage.connections < 3 and curate.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the stage is at work on the lake
        outage.down()
        out, err = curate.communicate(timeout=600)
        assert curate.returncode != 0, "the stage cannot succeed without its S3 store"
        error = [line for line in err.splitlines() if line.startswith("FLUXO_ERROR:")]
        assert error and "S3StoreUnreachable" in error[-1] and outage.endpoint in error[-1], err[-3000:]
        assert "make status" in error[-1]
        if open_delta(lake.curated_transactions) is not None:
            # a whole version or none: the cut may come before the day's commit or after it
            assert len(ids_of_day(lake, day)) in (0, 20_000)

        outage.up()  # the server is back: the retry redoes the stage and the day lands once
        finish(start_stages(script_argv("curate", lake_root=lake.root, ingest_date="2026-11-07"), env=env))
    finally:
        outage.down()
    rows = read_delta(lake.curated_transactions, TRANSACTION.arrow_schema(), filters=[("event_date", "=", day)])
    assert rows.num_rows == len(set(rows.column("transaction_id").to_pylist())) == 20_000  # landed once


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


def test_plain_parquet_outputs_on_s3_commit_with_one_rename_only_under_a_local_master():
    """The v2 file committer skips the job-level S3 copy; it is safe only where no task is retried."""
    from fluxo.spark import local_conf

    committer = "spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version"
    assert local_conf("probe", s3=True, env={})[committer] == "2"
    assert committer not in local_conf("probe", s3=True, env={"FLUXO_SPARK_MASTER": "spark://spark:7077"})
    assert committer not in local_conf("probe", s3=False, env={})
