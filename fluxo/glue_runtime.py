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

import json
import os
from datetime import date
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from fluxo.lake import Lake

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


@dataclass
class StageRuntime:
    spark: Any
    args: dict[str, Any]
    glue_context: Any = None
    job: Any = None
    _finished: bool = field(default=False, repr=False)

    @property
    def in_glue(self) -> bool:
        return self.job is not None

    @property
    def lake(self) -> Lake:
        return Lake(self.args["lake_root"])

    def finish(self) -> None:
        """Commit the Glue job (bookmarks/run state) or stop the local session."""
        if self._finished:
            return
        self._finished = True
        if self.job is not None:
            self.job.commit()
        else:
            self.spark.stop()


def _session_confs() -> dict[str, str]:
    return {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
    }


def start_stage(required: list[str], optional: dict[str, str | None] | None = None) -> StageRuntime:
    """Parse the arguments and get a Spark session (GlueContext + Job inside AWS Glue)."""
    args = resolve_args(["JOB_NAME", *required], optional)
    from pyspark.sql import SparkSession

    # Launched by spark-submit or by AWS Glue (which always passes --JOB_RUN_ID): the JVM
    # and its master already exist, so only runtime SQL settings may be applied.
    launched = bool(os.environ.get("PYSPARK_GATEWAY_PORT")) or _given("JOB_RUN_ID", sys.argv)
    builder = SparkSession.builder.appName(f"fluxo-{args['JOB_NAME']}")
    if not launched:
        # Python workers must be this interpreter (the venv with pyarrow), not whatever python3 is on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (
            builder.master(os.environ.get("FLUXO_SPARK_MASTER", "local[*]"))
            .config("spark.driver.memory", os.environ.get("FLUXO_SPARK_DRIVER_MEMORY", "4g"))
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", os.environ.get("FLUXO_SPARK_SHUFFLE_PARTITIONS", "8"))
        )
    for key, value in _session_confs().items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    sc = spark.sparkContext
    sc.setLogLevel(os.environ.get("FLUXO_SPARK_LOG_LEVEL", "ERROR"))

    glue_context = job = None
    if _glue_jvm_available(sc):
        from awsglue.context import GlueContext
        from awsglue.job import Job

        glue_context = GlueContext(sc)
        spark = glue_context.spark_session
        job = Job(glue_context)
        job.init(args["JOB_NAME"], args)
    for key, value in _session_confs().items():
        spark.conf.set(key, value)
    if launched and os.environ.get("FLUXO_SPARK_SHUFFLE_PARTITIONS"):
        spark.conf.set("spark.sql.shuffle.partitions", os.environ["FLUXO_SPARK_SHUFFLE_PARTITIONS"])
    return StageRuntime(spark=spark, args=args, glue_context=glue_context, job=job)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    if len(text) > 2000:
        text = text[:2000] + "…"
    return f"{exc.__class__.__name__}: {text}"


def run_stage(main: Callable[[], Any]) -> None:
    """Run a stage's main; on failure print the traceback, then `FLUXO_ERROR: …` last, exit 1."""
    try:
        main()
    except BaseException as exc:  # noqa: BLE001 - the stage boundary reports every failure
        if isinstance(exc, SystemExit) and not exc.code:
            raise
        traceback.print_exc(file=sys.stderr)
        _stop_active_session()
        sys.stdout.flush()
        sys.stderr.write(ERROR_PREFIX + _one_line(exc) + "\n")
        sys.stderr.flush()
        sys.exit(1)


def _stop_active_session() -> None:
    # Stopping first keeps late JVM log lines from landing after the FLUXO_ERROR line.
    try:
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        if session is not None:
            session.stop()
    except Exception:
        pass


# --- stage statistics --------------------------------------------------------------


def stats_path(lake_root: str, ingest_date: str, stage: str) -> str:
    return Lake(lake_root).stats(ingest_date, stage)


def _hadoop_path(spark, path: str):
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath, hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def write_text(spark, path: str, text: str) -> None:
    """Write one UTF-8 file through Hadoop's FileSystem (local path, file:// or s3://)."""
    hpath, fs = _hadoop_path(spark, path)
    fs.setWriteChecksum(False)  # no .crc sidecar next to a local file
    out = fs.create(hpath, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def read_text(spark, path: str) -> str | None:
    """The UTF-8 content of one file, or None when it does not exist."""
    hpath, fs = _hadoop_path(spark, path)
    if not fs.exists(hpath):
        return None
    stream = fs.open(hpath)
    try:
        scanner = spark.sparkContext._jvm.java.util.Scanner(stream, "UTF-8").useDelimiter("\\A")
        return scanner.next() if scanner.hasNext() else ""
    finally:
        stream.close()


def write_stats(spark, lake_root: str, ingest_date: str, stage: str, stats: dict[str, Any]) -> str:
    """Write the stage's stats document (`Lake.stats`): the Airflow operator returns it as the task's XCom."""
    path = stats_path(lake_root, ingest_date, stage)
    write_text(spark, path, json.dumps(stats, sort_keys=True, default=str))
    print(f"{stage}: stats written to {path}", flush=True)
    return path


def read_stats(spark, lake_root: str, ingest_date: str, stage: str) -> dict[str, Any] | None:
    text = read_text(spark, stats_path(lake_root, ingest_date, stage))
    return json.loads(text) if text else None


def curated_days(rt: StageRuntime) -> list[str]:
    """The event dates a stage after curate works on: `--event_dates` (comma-separated) when given,
    else the days curate replaced for this ingest date (its stats document)."""
    given = rt.args.get("event_dates")
    if given is not None:
        return sorted({date.fromisoformat(d.strip()).isoformat() for d in given.split(",") if d.strip()})
    ingest_date = rt.args["ingest_date"]
    curate = read_stats(rt.spark, rt.lake.root, ingest_date, "curate")
    if curate is None:
        raise FileNotFoundError(f"no curate results for ingest date {ingest_date}: run curate first (or pass --event_dates)")
    return list(curate["dates"])


# --- file system helpers -----------------------------------------------------------


def path_exists(spark, path: str) -> bool:
    hpath, fs = _hadoop_path(spark, path)
    return bool(fs.exists(hpath))


def list_files(spark, root: str, suffixes: tuple[str, ...]) -> list[str]:
    """Every file under root (recursively) whose name ends with one of suffixes; hidden files skipped."""
    hpath, fs = _hadoop_path(spark, root)
    if not fs.exists(hpath):
        return []
    base = fs.makeQualified(hpath).toString().rstrip("/")
    found = []
    it = fs.listFiles(hpath, True)
    while it.hasNext():
        path = it.next().getPath().toString()
        relative = path[len(base):].strip("/").split("/")
        if any(part.startswith((".", "_")) for part in relative):
            continue
        if relative[-1].lower().endswith(suffixes):
            found.append(path)
    return sorted(found)
