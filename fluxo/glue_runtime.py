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

import contextlib
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable

from fluxo.lake import Lake
from fluxo.spark import RUNTIME_CONF, is_s3, local_session
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


def start_stage(required: list[str], optional: dict[str, str | None] | None = None) -> StageRuntime:
    """Parse the arguments and get a Spark session (GlueContext + Job inside AWS Glue).

    Outside Glue the session is `fluxo.spark.local_session`: Delta Lake, and S3A when any
    argument names an s3:// location.
    """
    args = resolve_args(["JOB_NAME", *required], optional)
    from pyspark.sql import SparkSession

    # Launched by spark-submit or by AWS Glue (which always passes --JOB_RUN_ID): the JVM
    # and its master already exist, so only runtime SQL settings may be applied.
    launched = bool(os.environ.get("PYSPARK_GATEWAY_PORT")) or _given("JOB_RUN_ID", sys.argv)
    if launched:
        spark = SparkSession.builder.appName(f"fluxo-{args['JOB_NAME']}").getOrCreate()
    else:
        uses_s3 = any(is_s3(value) for value in args.values() if isinstance(value, str))
        spark = local_session(f"fluxo-{args['JOB_NAME']}", s3=uses_s3)
    sc = spark.sparkContext

    glue_context = job = None
    if _glue_jvm_available(sc):
        from awsglue.context import GlueContext
        from awsglue.job import Job

        glue_context = GlueContext(sc)
        spark = glue_context.spark_session
        job = Job(glue_context)
        job.init(args["JOB_NAME"], args)
    for key, value in RUNTIME_CONF.items():
        spark.conf.set(key, value)
    if launched and os.environ.get("FLUXO_SPARK_SHUFFLE_PARTITIONS"):
        spark.conf.set("spark.sql.shuffle.partitions", os.environ["FLUXO_SPARK_SHUFFLE_PARTITIONS"])
    return StageRuntime(spark=spark, args=args, glue_context=glue_context, job=job)


_UNREACHABLE = ("Connection refused", "UnknownHostException", "connect timed out", "Unable to execute HTTP request")


def _one_line(exc: BaseException) -> str:
    text = mask_pans(" ".join(str(exc).split())) or exc.__class__.__name__
    endpoint = os.environ.get("FLUXO_S3_ENDPOINT", "")
    if any(marker in text for marker in _UNREACHABLE) and ("s3a://" in text or "s3://" in text or endpoint in text):
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


def run_stage(main: Callable[[], Any]) -> None:
    """Run a stage's main; on failure print the traceback, then `FLUXO_ERROR: …` last, exit 1.

    Both are card-number masked: an exception may quote a value, and the error line travels
    on into the task log, the run audit and the alerts."""
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


# --- file system helpers -----------------------------------------------------------


def path_exists(spark, path: str) -> bool:
    hpath, fs = _hadoop_path(spark, path)
    return bool(fs.exists(hpath))


def copy_tree(spark, source: str, target: str) -> int:
    """Copy every file under `source` to the same relative path under `target` (any two Hadoop
    file systems: a local folder to S3, say); files already at the target are kept. Returns the
    number of files copied."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    src_root, src_fs = _hadoop_path(spark, source)
    _, dst_fs = _hadoop_path(spark, target)
    if not src_fs.exists(src_root):
        raise FileNotFoundError(f"nothing to copy: {source} does not exist")
    base = src_fs.makeQualified(src_root).toString().rstrip("/")
    copied = 0
    files = src_fs.listFiles(src_root, True)
    while files.hasNext():
        path = files.next().getPath()
        relative = path.toString()[len(base):].lstrip("/")
        destination = jvm.org.apache.hadoop.fs.Path(f"{target.rstrip('/')}/{relative}")
        if not dst_fs.exists(destination):
            jvm.org.apache.hadoop.fs.FileUtil.copy(src_fs, path, dst_fs, destination, False, conf)
            copied += 1
    return copied


def delete_path(spark, path: str) -> bool:
    """Delete a file or folder (recursively); False when there was nothing."""
    hpath, fs = _hadoop_path(spark, path)
    return bool(fs.delete(hpath, True))


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


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


@contextlib.contextmanager
def local_copy(spark, uri: str, children: tuple[str, ...]) -> Iterator[str]:
    """A local folder standing for the lake folder `uri` (its `children` folders), for tools that
    only write local files (GX Data Docs): the folder itself when the lake is local; else a
    temporary copy, whose children are uploaded back when the block ends without error."""
    if is_local(uri):
        path = uri.removeprefix("file://")
        os.makedirs(path, exist_ok=True)
        yield path
        return
    jvm = spark.sparkContext._jvm
    with tempfile.TemporaryDirectory(prefix="fluxo-local-copy-") as local:
        for child in children:
            remote, fs = _hadoop_path(spark, f"{uri.rstrip('/')}/{child}")
            if fs.exists(remote):
                fs.copyToLocalFile(False, remote, jvm.org.apache.hadoop.fs.Path(f"file://{local}/{child}"), True)
        yield local
        for child in children:
            remote, fs = _hadoop_path(spark, f"{uri.rstrip('/')}/{child}")
            if os.path.isdir(os.path.join(local, child)):
                fs.delete(remote, True)
                fs.copyFromLocalFile(False, True, jvm.org.apache.hadoop.fs.Path(f"file://{local}/{child}"), remote)
