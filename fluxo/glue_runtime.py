"""Bootstrap shared by every Glue script, so one script runs unchanged on AWS Glue and locally.

On AWS Glue the script is launched with the Glue JVM classes on the classpath: we
create `GlueContext`/`Job` and commit the job at the end. Locally (`python
glue_scripts/x.py --JOB_NAME x ...` or `spark-submit`), the same `awsglue` Python
package may be importable (awsglue-dev) but its JVM side is missing, so we use a
plain SparkSession configured from FLUXO_SPARK_* environment variables.

`run_stage(main)` turns any failure into one last stderr line
`FLUXO_ERROR: <message>` and exit code 1; the Airflow operator surfaces that line.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable

from fluxo import storage
from fluxo.lake import Lake
from fluxo.spark import RUNTIME_CONF, is_s3, local_session, remote_session
from fluxo.tokenize import mask_pans

ERROR_PREFIX = "FLUXO_ERROR: "


def _given(name: str, argv: list[str]) -> bool:
    flag = f"--{name}"
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def resolve_args(
    required: list[str], optional: dict[str, str | None] | None = None, argv: list[str] | None = None
) -> dict[str, Any]:
    """Glue-style `--name value` arguments; optional ones fall back to their defaults.

    `getResolvedOptions` only knows required options, so optional ones are passed
    to it only when they appear on the command line.
    """
    argv = list(sys.argv if argv is None else argv)
    optional = optional or {}
    names = list(required) + [n for n in optional if _given(n, argv)]
    try:
        from awsglue.utils import getResolvedOptions
    except ImportError:  # no awsglue at all: same contract with argparse
        import argparse

        parser = argparse.ArgumentParser()
        for n in names:
            parser.add_argument(f"--{n}", required=True)
        resolved = vars(parser.parse_known_args(argv[1:])[0])
    else:
        resolved = getResolvedOptions(argv, names)
    args = {n: resolved[n] for n in names}
    for n, default in optional.items():
        args.setdefault(n, default)
    return args


def _glue_jvm_available(sc) -> bool:
    try:
        from py4j.java_gateway import JavaClass

        return isinstance(sc._jvm.com.amazonaws.services.glue.GlueContext, JavaClass)
    except Exception:
        return False


# The stage runtimes started in this process (several when tests run stages one after another).
_running: list[StageRuntime] = []


@dataclass
class StageRuntime:
    spark: Any
    args: dict[str, Any]
    glue_context: Any = None
    job: Any = None
    _finished: bool = field(default=False, repr=False)
    _persisted: list = field(default_factory=list, repr=False)

    @property
    def in_glue(self) -> bool:
        return self.job is not None

    @property
    def lake(self) -> Lake:
        return Lake(self.args["lake_root"])

    def persist(self, frame):
        """Keep `frame` for the stage's further reads, and return the frame to read them from.

        Over Spark Connect: a local checkpoint. Every query a client sends carries its whole plan,
        which the server analyses again, and again to match it with a cached frame; a checkpoint is
        referenced by id (a 20k-row day: fraud 6.6 -> 5.9 s, outliers 4.2 -> 3.7 s; docs/performance.md). Its blocks go
        when the stage's session is released and the server's JVM collects them (the stack's server
        collects every two minutes: `connect_server_conf`). A plan nested deeper than protobuf's
        decoder allows (100 levels, as standardize's PAN check is) cannot be copied into the
        checkpoint command: such a frame is persisted.
        Elsewhere (AWS Glue, a local session): `frame.persist(MEMORY_AND_DISK)`, released when the
        stage ends however it ends (a Connect server would keep it after the session has gone)."""
        from pyspark import StorageLevel

        if _is_connect(self.spark):
            from google.protobuf.message import DecodeError

            try:
                return frame.localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)
            except DecodeError:
                pass
        self._persisted.append(frame.persist(StorageLevel.MEMORY_AND_DISK))
        return frame

    def release_cached(self) -> None:
        """Unpersist every frame `persist` cached: `finish()` and a failed stage's way out call it."""
        while self._persisted:
            try:
                self._persisted.pop().unpersist()
            except Exception:  # noqa: BLE001 - a session already gone has nothing left to release
                pass

    def finish(self) -> None:
        """Release the stage's cached frames, then commit the Glue job (bookmarks/run state) or stop
        the session (over Spark Connect, the client's session only: the server keeps running)."""
        if self._finished:
            return
        self._finished = True
        self.release_cached()
        if self.job is not None:
            self.job.commit()
        else:
            self.spark.stop()


def start_stage(required: list[str], optional: dict[str, str | None] | None = None,
                conf: dict[str, str] | None = None) -> StageRuntime:
    """Parse the arguments and get a Spark session (GlueContext + Job inside AWS Glue), with
    RUNTIME_CONF and the stage's own runtime SQL settings `conf` set on it.

    Outside Glue: a session on the Spark Connect server FLUXO_SPARK_REMOTE names (the local
    stack's warm Spark, or a cluster), else `fluxo.spark.local_session` (Delta Lake, and S3A
    when any argument names an s3:// location).
    """
    args = resolve_args(["JOB_NAME", *required], optional)
    from pyspark.sql import SparkSession

    # Launched by spark-submit or by AWS Glue (which always passes --JOB_RUN_ID): the JVM
    # and its master already exist, so only runtime SQL settings may be applied.
    launched = bool(os.environ.get("PYSPARK_GATEWAY_PORT")) or _given("JOB_RUN_ID", sys.argv)
    remote = None if launched else os.environ.get("FLUXO_SPARK_REMOTE")
    if launched:
        spark = SparkSession.builder.appName(f"fluxo-{args['JOB_NAME']}").getOrCreate()
    elif remote:
        spark = remote_session(remote)
    else:
        uses_s3 = any(is_s3(value) for value in args.values() if isinstance(value, str))
        spark = local_session(f"fluxo-{args['JOB_NAME']}", s3=uses_s3)

    glue_context = job = None
    if not remote and _glue_jvm_available(spark.sparkContext):
        sc = spark.sparkContext
        from awsglue.context import GlueContext
        from awsglue.job import Job

        glue_context = GlueContext(sc)
        spark = glue_context.spark_session
        job = Job(glue_context)
        job.init(args["JOB_NAME"], args)
    for key, value in {**RUNTIME_CONF, **(conf or {})}.items():
        spark.conf.set(key, value)
    if (launched or remote) and os.environ.get("FLUXO_SPARK_SHUFFLE_PARTITIONS"):
        spark.conf.set("spark.sql.shuffle.partitions", os.environ["FLUXO_SPARK_SHUFFLE_PARTITIONS"])
    runtime = StageRuntime(spark=spark, args=args, glue_context=glue_context, job=job)
    _running.append(runtime)
    return runtime


# what Hadoop's S3A (Java) and the driver's pyarrow (AWS C++ SDK) say when the S3 store is down
_UNREACHABLE = ("Connection refused", "UnknownHostException", "connect timed out", "Unable to execute HTTP request",
                "NETWORK_CONNECTION", "Couldn't connect to server")


def _one_line(exc: BaseException) -> str:
    text = mask_pans(" ".join(str(exc).split())) or exc.__class__.__name__
    endpoint = os.environ.get("FLUXO_S3_ENDPOINT", "")
    s3_named = "s3a://" in text or "s3://" in text or (endpoint and endpoint in text) or "NETWORK_CONNECTION" in text
    if any(marker in text for marker in _UNREACHABLE) and s3_named:
        where = endpoint or "the S3 endpoint"
        return (f"S3StoreUnreachable: the lake's S3 store {where} did not answer ({_first_cause(text)}); "
                "check that it runs (`make status`) and retry the stage, which redoes its work from the start")
    if len(text) > 2000:
        text = text[:2000] + "…"
    return f"{exc.__class__.__name__}: {text}"


def _first_cause(text: str) -> str:
    for marker in _UNREACHABLE:
        at = text.find(marker)
        if at >= 0:
            return text[at: at + 160]
    return text[:160]


class StageTerminated(Exception):
    """SIGTERM (the Airflow task was killed or timed out)."""


def _terminate(signum, frame) -> None:
    raise StageTerminated(f"stopped by signal {signum}: the task was killed or ran out of time")


def run_stage(main: Callable[[], Any]) -> None:
    """Run a stage's main; on failure print the traceback, then `FLUXO_ERROR: …` last, exit 1.

    Both are card-number masked: an exception may quote a value, and the error line travels
    on into the task log, the run audit and the alerts. SIGTERM fails the stage the same way; on a
    Spark Connect server its running jobs are interrupted first (the server outlives this process)."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main()
    except BaseException as exc:  # noqa: BLE001 - the stage boundary reports every failure
        if isinstance(exc, SystemExit) and not exc.code:
            raise
        sys.stderr.write(mask_pans(traceback.format_exc()))
        _stop_active_session()
        sys.stdout.flush()
        sys.stderr.write(ERROR_PREFIX + _one_line(exc) + "\n")
        sys.stderr.flush()
        sys.exit(1)
    if _is_whole_program(main) and _running and _is_connect(_running[-1].spark):
        _exit_without_teardown()


def _is_connect(session) -> bool:
    return type(session).__module__.startswith("pyspark.sql.connect")


def _is_whole_program(main: Callable[[], Any]) -> bool:
    """Whether the stage's script is the program the interpreter was started with (`python script.py`),
    so nothing runs after it; not when a caller runs scripts in its own process (`runpy`, which
    swaps `__main__` and `sys.argv` for each script, so the original command line decides)."""
    script = getattr(main, "__globals__", {}).get("__file__")
    args = iter(sys.orig_argv[1:])
    for arg in args:
        if arg in ("-c", "-m"):
            return False
        if arg in ("-X", "-W"):
            next(args, None)
        elif not arg.startswith("-"):
            return script is not None and os.path.realpath(arg) == os.path.realpath(script)
    return False


def _exit_without_teardown() -> None:
    """End a finished stage without Python's module teardown: with Great Expectations imported
    (about 2,600 modules) the teardown alone took 0.9-1.1 s after every result was written, on
    each quality gate and fraud run. Over Spark Connect the server holds nothing of this process
    once its session is stopped. Threads are joined and exit handlers run as at a normal exit."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _stop_active_session() -> None:
    # Stopping first keeps late JVM log lines from landing after the FLUXO_ERROR line. Only the
    # session the stage started: another one active in this process (a caller's) is not the stage's.
    try:
        session = _running[-1].spark if _running else None
        if session is not None:
            if _is_connect(session):
                session.interruptAll()  # its jobs would go on in the server
            _running[-1].release_cached()
            session.stop()
    except Exception:
        pass


# --- stage statistics --------------------------------------------------------------


def stats_path(lake_root: str, ingest_date: str, stage: str) -> str:
    return Lake(lake_root).stats(ingest_date, stage)


def write_stats(spark, lake_root: str, ingest_date: str, stage: str, stats: dict[str, Any]) -> str:
    """Write the stage's stats document (`Lake.stats`): the Airflow operator returns it as the task's XCom."""
    path = stats_path(lake_root, ingest_date, stage)
    storage.write_text(path, json.dumps(stats, sort_keys=True, default=str))
    print(f"{stage}: stats written to {path}", flush=True)
    return path


def read_stats(spark, lake_root: str, ingest_date: str, stage: str) -> dict[str, Any] | None:
    text = storage.read_text(stats_path(lake_root, ingest_date, stage))
    return json.loads(text) if text else None


def curated_input(rt: StageRuntime) -> tuple[list[str], int | None]:
    """What a stage after curate reads: (event dates, curated table version).

    `--event_dates D1,D2` and `--curated_version N` when given; else the days curate
    merged for this ingest date and the version its commit made (its results document),
    so every later stage reads one snapshot even while other days are being curated.
    """
    given = rt.args.get("event_dates")
    version = rt.args.get("curated_version")
    if given is not None:
        dates = sorted({date.fromisoformat(d.strip()).isoformat() for d in given.split(",") if d.strip()})
        return dates, (int(version) if version not in (None, "") else None)
    ingest_date = rt.args["ingest_date"]
    curate = read_stats(rt.spark, rt.lake.root, ingest_date, "curate")
    if curate is None:
        raise FileNotFoundError(f"no curate results for ingest date {ingest_date}: run curate first (or pass --event_dates)")
    return list(curate["dates"]), curate.get("version")
