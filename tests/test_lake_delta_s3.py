"""The curated Delta table on the S3 store under real processes: concurrent curates of different
days all land, two JVMs committing at the same instant lose nothing, and a store that stops mid-run
fails the stage clearly and its retry lands the day once.

Each curate runs as its own `glue_scripts/curate.py` process (its own JVM), as the DAG runs it;
the reader is delta-rs in this process, as the API reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import pytest

from fluxo.contract import TRANSACTION
from fluxo.lake import Lake
from fluxo_platform.lakefs import delta_history, open_delta, read_delta

from tests.curated_days import environment, ids_of_day, staged_day, start_curate
from tests.stage_runs import REPO, finish, script_argv, start_stages


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

