"""The three Glue scripts end to end as subprocesses on a tiny raw folder: outputs, stats,
idempotent reruns, a cross-run duplicate, an empty day and the FLUXO_ERROR failure line."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from fluxo.contract import DAILY_METRICS, METRIC_GRAINS, QUARANTINE, TRANSACTION
from fluxo.glue_runtime import ERROR_PREFIX, read_stats, resolve_args, write_stats
from fluxo.lake import Lake
from fluxo_platform.lakefs import open_delta, read_delta
from tests.stage_runs import stage_environment

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "glue_scripts"
DAY1, DAY2, EMPTY_DAY = "2026-11-26", "2026-11-27", "2026-11-25"
HEADER = "id_transacao;data_hora;cliente;cartao;cartao_final;estabelecimento;mcc;valor;moeda;pais;canal;status"
PAN = "5555555555554444"


def gateway(tid, occurred, amount, currency="BRL", channel="ecommerce", status="APPROVED", customer="C9"):
    return json.dumps({
        "id": tid, "occurred_at": occurred, "customer": {"id": customer},
        "card": {"token": "tok_g", "last4": "4242"},
        "merchant": {"id": "M9", "mcc": "5999", "country": "br"},
        "amount": {"value": amount, "currency": currency}, "channel": channel, "status": status,
    })


DAY1_CSV = "\n".join([
    HEADER,
    "s1;26/11/2026 14:03:22;C1;tok_a;1234;M1;5411;1.234,56;BRL;BR;Presencial;aprovada",
    f"s2;26/11/2026 22:30:00;C2;{PAN};;M2;5812;10,00;usd;us;ONLINE;Negada",
    "s3;31/02/2026 10:00:00;C3;tok_b;;M1;5411;5,00;BRL;BR;pos;ok",
    "s4;26/11/2026 10:00:00;C4",
    "g1;26/11/2026 07:00:00;C9;tok_g;4242;M9;5999;51,00;BRL;BR;web;aprovada",
]) + "\n"
DAY1_JSONL = "\n".join([
    gateway("g1", "2026-11-26T10:00:00Z", 50),
    gateway("g2", "2026-11-26T12:00:00-03:00", "20.00", currency="eur", status="declined"),
    '{"id": "g-broken", ',
    gateway("g3", "2026-11-26T12:00:00Z", 1, channel="drone"),
]) + "\n"
DAY2_JSONL = "\n".join([
    gateway("s1", "2026-11-26T17:03:22Z", "1234.56", customer="C1"),  # redelivered a day later
    gateway("n1", "2026-11-26T20:00:00+00:00", "100.00", customer="C5"),
]) + "\n"


def land(lake_root: Path, ingest_date: str, batch: str, name: str, text: str, landed: datetime) -> None:
    folder = lake_root / "raw" / "s3" / f"ingest_date={ingest_date}" / f"batch={batch}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    data = text.encode()
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    os.utime(path, (landed.timestamp(), landed.timestamp()))


def environment() -> dict[str, str]:
    return stage_environment(FLUXO_TOKEN_SALT="glue-scripts-test")


def stage_argv(stage: str, lake_root: Path, ingest_date: str) -> list[str]:
    argv = [str(SCRIPTS / f"{stage}.py"), "--JOB_NAME", stage, "--lake_root", str(lake_root), "--ingest_date", ingest_date]
    return argv + (["--batch_id", f"run-{ingest_date}"] if stage == "standardize" else [])


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=environment(), capture_output=True, text=True, timeout=600
    )


def run_in_one_process(steps: list[list[str] | dict], cwd: Path) -> subprocess.CompletedProcess:
    """Several stages in one Python process (one JVM): the scripts run as __main__ one after another.
    A step `{"argv": [...], "env": {...}}` runs with extra environment and may fail (exit 1)."""
    driver = (
        "import json, os, runpy, sys\n"
        "for step in json.loads(sys.argv[1]):\n"
        "    step = step if isinstance(step, dict) else {'argv': step}\n"
        "    saved = dict(os.environ)\n"
        "    os.environ.update(step.get('env', {}))\n"
        "    sys.argv = step['argv']\n"
        "    try:\n"
        "        runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "    except SystemExit as exc:\n"
        "        if not step.get('env') or exc.code != 1:\n"
        "            raise\n"
        "    finally:\n"
        "        os.environ.clear()\n"
        "        os.environ.update(saved)\n"
    )
    return run(["-c", driver, json.dumps(steps)], cwd)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ERROR_PREFIX not in proc.stderr


def stats(lake_root: Path, ingest_date: str, stage: str) -> dict:
    return json.loads((lake_root / "work" / "stats" / f"ingest_date={ingest_date}" / f"{stage}.json").read_text())


def table(path: str, partitioned: bool = False):
    dataset = ds.dataset(path, format="parquet", partitioning="hive" if partitioned else None)
    return dataset.to_table().to_pandas()


def curated(lake: Lake, version: int | None = None):
    return read_delta(lake.curated_transactions, TRANSACTION.arrow_schema(), version).to_pandas()


def curated_snapshot(lake: Lake) -> list[tuple]:
    df = curated(lake)
    return sorted(tuple(str(v) for v in row) for row in df[TRANSACTION.names].itertuples(index=False))


def files_by_day(lake: Lake, version: int) -> dict[str, set[str]]:
    """The data files of each curated day at a table version."""
    actions = pa.table(open_delta(lake.curated_transactions, version).get_add_actions(flatten=True)).to_pylist()
    days: dict[str, set[str]] = {}
    for action in actions:
        days.setdefault(str(action["partition.event_date"]), set()).add(action["path"])
    return days


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    lake = Lake(str(root))
    landed1 = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)
    land(root, DAY1, "b1", "acquirer.csv", DAY1_CSV, landed1)
    land(root, DAY1, "b2", "gateway.jsonl.gz", DAY1_JSONL, landed1)
    land(root, DAY2, "b3", "gateway.jsonl", DAY2_JSONL, datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc))

    first = {}
    for stage in ("standardize", "curate", "aggregate"):
        first[stage] = run(stage_argv(stage, root, DAY1), root)
        assert_ok(first[stage])
    result = {
        "root": root,
        "lake": lake,
        "first_stats": {s: stats(root, DAY1, s) for s in first},
        "first_curated": curated_snapshot(lake),
        "first_metrics": table(lake.metrics("daily", DAY1)),
    }
    # rerun day 1; day 2 (a redelivery of a curated transaction); then a day without files
    rest = run_in_one_process(
        [stage_argv(s, root, d) for d in (DAY1, DAY2, EMPTY_DAY) for s in ("standardize", "curate", "aggregate")],
        root,
    )
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert not [line for line in rest.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    result["rerun_stats"] = {s: stats(root, DAY1, s) for s in first}
    return result


def test_first_run_outputs_and_stats(runs):
    lake, st = runs["lake"], runs["first_stats"]
    assert st["standardize"] == {
        "stage": "standardize",
        "read": 9,
        "staged": 4,
        "quarantined": 4,
        "quarantine_by_reason": {"invalid_timestamp": 1, "invalid_value:channel": 1, "malformed_record": 2},
        "duplicates_in_batch": 1,
        "duplicates_dropped": 1,
        "by_source": {"s3": {"read": 9, "staged": 4, "quarantined": 4, "duplicates_in_batch": 1, "quarantine_by_reason": {
            "invalid_timestamp": 1, "invalid_value:channel": 1, "malformed_record": 2}}},
    }
    staged = table(lake.staged(DAY1))
    assert list(staged.columns) == TRANSACTION.names
    assert sorted(staged["transaction_id"]) == ["g1", "g2", "s1", "s2"]
    assert PAN not in staged.to_csv()
    quarantine = table(lake.quarantine(DAY1, "standardize"))
    assert list(quarantine.columns) == QUARANTINE.names and len(quarantine) == 4

    assert st["curate"] == {
        "stage": "curate",
        "staged": 4,
        "already_curated": 0,
        "replaced": 0,
        "curated_new": 4,
        "dates": [DAY1, DAY2],  # s2 at 22:30 São Paulo is 01:30 UTC the next day
        "version": 1,  # the table's creation, then this MERGE
    }
    rows = curated(lake)
    g1 = rows[rows["transaction_id"] == "g1"].iloc[0]
    assert (g1["amount"], g1["batch_id"]) == (Decimal("51.00"), "b1")  # same landing time: smaller batch wins

    aggregate = dict(st["aggregate"])
    grain_rows = aggregate.pop("grain_rows")
    assert aggregate == {"stage": "aggregate", "metric_rows": 2, "dates": [DAY1, DAY2], "curated_version": 1}
    assert grain_rows == {grain: len(table(lake.metrics(grain, DAY1))) for grain in METRIC_GRAINS}
    metrics = runs["first_metrics"].set_index("event_date")
    assert list(runs["first_metrics"].columns) == DAILY_METRICS.names
    day = metrics.loc[date(2026, 11, 26)]
    # s1 1234.56 + g1 51.00 + g2 20 EUR x 5.80 = 116.00
    assert (day["transaction_count"], day["amount_total"], day["amount_avg"]) == (3, Decimal("1401.56"), Decimal("467.19"))
    assert (day["approved_count"], day["declined_count"], day["approval_rate"]) == (2, 1, pytest.approx(2 / 3))
    assert metrics.loc[date(2026, 11, 27)]["amount_total"] == Decimal("53.50")  # 10 USD x 5.35


def test_rerun_of_a_day_is_idempotent(runs):
    assert runs["rerun_stats"]["standardize"] == runs["first_stats"]["standardize"]
    curate = runs["rerun_stats"]["curate"]
    assert (curate["curated_new"], curate["already_curated"], curate["replaced"]) == (0, 4, 0)
    assert curate["version"] == runs["first_stats"]["curate"]["version"] + 1


def test_next_day_dedupes_against_curated_and_replaces_only_touched_partitions(runs):
    root, lake = runs["root"], runs["lake"]
    day2 = stats(root, DAY2, "curate")
    assert day2 == {
        "stage": "curate", "staged": 2, "already_curated": 1, "replaced": 0, "curated_new": 1,
        "dates": [DAY1], "version": day2["version"],
    }
    after = curated_snapshot(lake)
    ids = [row[0] for row in after]
    assert sorted(ids) == sorted({*ids}) == ["g1", "g2", "n1", "s1", "s2"]
    s1 = [row for row in after if row[0] == "s1"][0]
    assert s1 == [row for row in runs["first_curated"] if row[0] == "s1"][0]  # the earlier copy stays
    # the day-2 commit rewrote files of the day it touches only
    before, now = files_by_day(lake, day2["version"] - 1), files_by_day(lake, day2["version"])
    assert now[DAY2] == before[DAY2] and now[DAY1] != before[DAY1]
    metrics = table(lake.metrics("daily", DAY2))
    assert metrics["transaction_count"].tolist() == [4]


def test_day_without_files_writes_empty_outputs(runs):
    root, lake = runs["root"], runs["lake"]
    assert stats(root, EMPTY_DAY, "standardize") == {
        "stage": "standardize", "read": 0, "staged": 0, "quarantined": 0,
        "quarantine_by_reason": {}, "duplicates_in_batch": 0, "duplicates_dropped": 0, "by_source": {},
    }
    assert stats(root, EMPTY_DAY, "curate")["dates"] == []
    empty = stats(root, EMPTY_DAY, "aggregate")
    assert (empty["metric_rows"], empty["dates"], set(empty["grain_rows"].values())) == (0, [], {0})
    assert list(table(lake.staged(EMPTY_DAY)).columns) == TRANSACTION.names
    assert list(table(lake.metrics("daily", EMPTY_DAY)).columns) == DAILY_METRICS.names


def test_failure_ends_with_one_fluxo_error_line(tmp_path):
    proc = run(stage_argv("curate", tmp_path, "2026-01-01"), tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(ERROR_PREFIX) and "run standardize for 2026-01-01 first" in last

    proc = run([str(SCRIPTS / "aggregate.py"), "--JOB_NAME", "aggregate", "--ingest_date", DAY1], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(ERROR_PREFIX + "GlueArgumentError")


# A stage that caches a frame, then fails before releasing it: through the runtime (`rt.persist`) or
# by persisting the frame itself.
CACHING_STAGE = """
from fluxo.glue_runtime import run_stage, start_stage

def main():
    rt = start_stage(["marker", "persist_with"])
    frame = rt.spark.range(1000).selectExpr(f"id * {int(rt.args['marker'])} AS v")
    (rt.persist(frame) if rt.args["persist_with"] == "runtime" else frame.persist()).count()
    raise RuntimeError("the stage failed after caching a frame")

run_stage(main)
"""


def test_a_failed_stage_leaves_no_cached_frame_on_the_shared_spark(spark, stack_env, tmp_path):
    """The stack's Spark Connect server keeps a frame cached after the session that persisted it has
    gone; a stage that fails after `rt.persist` releases its frames on the way out."""
    script = tmp_path / "caching_stage.py"
    script.write_text(CACHING_STAGE)
    env = stage_environment(FLUXO_SPARK_REMOTE=stack_env["FLUXO_SPARK_REMOTE"])

    def failed_stage_frame(persist_with: str):
        marker = time.time_ns() % 10**9  # a plan no other run of this test has cached
        proc = subprocess.run([sys.executable, str(script), "--JOB_NAME", "caching", "--marker", str(marker),
                               "--persist_with", persist_with], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1 and "the stage failed after caching a frame" in proc.stderr, proc.stderr[-2000:]
        return spark.range(1000).selectExpr(f"id * {marker} AS v")  # the same plan, from another session

    kept = failed_stage_frame("itself")
    try:
        assert kept.storageLevel.useMemory, "the server no longer keeps a gone session's frames: simplify the runtime"
    finally:
        kept.unpersist()
    released = failed_stage_frame("runtime")
    assert not released.storageLevel.useMemory and not released.storageLevel.useDisk


def test_a_stage_keeps_frames_on_spark_connect_as_local_checkpoints(spark):
    """Over Spark Connect `rt.persist` checkpoints (later queries reference the frame by id instead of
    resending its plan); a plan too deep for protobuf's copy into the checkpoint command is persisted
    instead, and released with the stage's other cached frames."""
    from pyspark.sql import functions as F

    from fluxo.glue_runtime import StageRuntime

    rt = StageRuntime(spark=spark, args={})  # not started by start_stage: finish() would stop the shared session
    kept = rt.persist(spark.range(100).selectExpr("id * 7 AS v"))
    assert type(kept._plan).__name__ == "CachedRemoteRelation"
    assert kept.agg(F.sum("v")).first()[0] == 7 * 4950 and rt._persisted == []

    deep = spark.range(3)
    for _ in range(60):  # each select nests the plan two protobuf levels deeper
        deep = deep.select((F.col("id") + 1).alias("id"))
    try:
        assert rt.persist(deep) is deep and deep.storageLevel.useMemory
        assert [r.id for r in deep.collect()] == [60, 61, 62]
    finally:
        rt.release_cached()
    assert not deep.storageLevel.useMemory and not deep.storageLevel.useDisk


def test_stages_on_the_stacks_spark_build_columns_without_walking_the_python_stack(spark):
    """PySpark reads this static setting from the server once, and otherwise inspects the caller's
    frames on every Column function call."""
    from pyspark.errors.utils import is_debugging_enabled

    assert spark.conf.get("spark.python.sql.dataFrameDebugging.enabled") == "false"
    assert not is_debugging_enabled()


# A stage that succeeds, leaving work for the exit: a thread still writing, an exit handler, and an
# object whose finalizer only Python's module teardown would call.
FINISHING_STAGE = """
import atexit, sys, threading, time
from fluxo.glue_runtime import run_stage, start_stage

class Teardown:
    def __del__(self):
        print("module teardown ran", flush=True)

left_for_teardown = Teardown()

def main():
    rt = start_stage(["marker"])
    assert rt.spark.range(10).count() == 10
    writer = threading.Thread(target=lambda: (time.sleep(0.5), open(rt.args["marker"], "a").write("thread\\n")))
    writer.start()
    atexit.register(lambda: print("exit handler ran", flush=True))
    rt.finish()
    print("stage done", flush=True)

run_stage(main)
"""


def test_a_finished_stage_skips_python_teardown_but_not_its_threads_or_exit_handlers(stack_env, tmp_path):
    """Over Spark Connect a stage that is the process's own program ends without module teardown (about
    1 s with Great Expectations imported); its threads finish and its exit handlers run. Scripts run one
    after another in a caller's process (runpy) are not cut short."""
    script = tmp_path / "finishing_stage.py"
    script.write_text(FINISHING_STAGE)
    marker = tmp_path / "thread.txt"
    env = stage_environment(FLUXO_SPARK_REMOTE=stack_env["FLUXO_SPARK_REMOTE"])
    argv = [str(script), "--JOB_NAME", "finishing", "--marker", str(marker)]

    alone = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert alone.stdout.splitlines() == ["stage done", "exit handler ran"]
    assert marker.read_text() == "thread\n"

    chained = subprocess.run(
        [sys.executable, "-c", "import runpy, sys\nfor _ in range(2):\n    runpy.run_path(sys.argv[1], run_name='__main__')",
         *argv], env=env, capture_output=True, text=True, timeout=300)
    assert chained.returncode == 0, chained.stderr[-2000:]
    assert chained.stdout.count("stage done") == 2
    assert marker.read_text() == "thread\n" * 3


def test_optional_arguments_take_defaults():
    argv = ["x.py", "--JOB_NAME", "x", "--lake_root", "/l", "--reporting_currency", "USD"]
    args = resolve_args(["JOB_NAME", "lake_root"], {"reporting_currency": "BRL", "token_salt": None}, argv)
    assert args == {"JOB_NAME": "x", "lake_root": "/l", "reporting_currency": "USD", "token_salt": None}


def test_stats_round_trip_as_one_file(spark, tmp_path):
    path = write_stats(spark, str(tmp_path), DAY1, "unit", {"stage": "unit", "read": 3})
    assert Path(path).name == "unit.json"
    assert sorted(p.name for p in Path(path).parent.iterdir()) == ["unit.json"]
    assert read_stats(spark, str(tmp_path), DAY1, "unit") == {"stage": "unit", "read": 3}
    assert read_stats(spark, str(tmp_path), DAY1, "missing") is None


def test_reporting_currency_setting_reaches_the_stage(tmp_path, monkeypatch):
    """FLUXO_REPORTING_CURRENCY=USD, through the operator's stage arguments, converts the day to USD."""
    sys.path.insert(0, str(REPO / "plugins"))
    from tests.airflow_stubs import TaskInstanceStub
    from fluxo_glue import FluxoGlueJobOperator
    from fluxo_platform.settings import get_settings

    land(tmp_path, DAY1, "b1", "acquirer.csv", DAY1_CSV, datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc))
    for key, value in {**environment(), "FLUXO_GLUE_MODE": "local", "FLUXO_REPORTING_CURRENCY": "usd",
                       "FLUXO_LAKE_ROOT": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        operator = FluxoGlueJobOperator(task_id="standardize", script="standardize", script_args={"--ingest_date": DAY1})
        result = operator.execute({"run_id": "manual__test", "ti": TaskInstanceStub()})
    finally:
        get_settings.cache_clear()
    assert result["stats"]["staged"] == 3  # the stage's results came back through the XCom
    staged = table(Lake(str(tmp_path)).staged(DAY1)).set_index("transaction_id")
    # 1 USD = 5.35 BRL in the development rates: BRL amounts divided, USD amounts kept
    assert staged.loc["s1", "amount_reporting"] == Decimal("230.76")  # 1234.56 BRL
    assert staged.loc["s2", "amount_reporting"] == Decimal("10.00")  # 10.00 USD
    assert staged.loc["g1", "amount_reporting"] == Decimal("9.53")  # 51.00 BRL
