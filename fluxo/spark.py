"""The Spark session a stage runs in outside AWS Glue: Delta Lake and S3 the way Glue 6.0 has them.

AWS Glue 6.0 brings Delta Lake (`--datalake-formats delta`, the session extensions set by
the job definition) and reads `s3://` natively. A local session gets the same from Maven
Central through `spark.jars.packages`: delta-spark for Spark 4.1, and hadoop-aws at the
Hadoop version inside pyspark (it pulls the AWS SDK v2 bundle, ~700 MB in all) when the
lake or any input is on S3. Ivy keeps the jars in its default cache (~/.ivy2.5.2), which
every clone on the machine shares; `python -m fluxo_platform.jvm` fills it ahead of time and
builds fluxo's Delta log store for S3 (FLUXO_DELTA_LOGSTORE_JAR), which makes commits from
several Spark processes to one S3 table safe.

`s3://` and `s3a://` URIs both go through S3A locally, configured from FLUXO_S3_ENDPOINT,
FLUXO_S3_ACCESS_KEY and FLUXO_S3_SECRET_KEY (the local S3 server, or any endpoint); with
no endpoint set, S3A uses the default AWS credential chain.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DELTA_PACKAGE = "io.delta:delta-spark_4.1_2.13:4.2.0"
HADOOP_AWS_PACKAGE = "org.apache.hadoop:hadoop-aws:3.4.2"
IVY_CACHE = Path.home() / ".ivy2.5.2"

# Delta's log store for s3:// and s3a:// tables when several Spark processes may commit to one
# table (jvm/src/main/java, built by fluxo_platform.jvm; on AWS Glue set by the job definition).
LOGSTORE_CLASS = "io.fluxo.delta.S3ConditionalPutLogStore"
DELTA_SQL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
# Runtime settings every fluxo session uses, locally and on AWS Glue.
RUNTIME_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    # a stage's persisted frame lives seconds and is read two or three times: compressing it costs
    # more than it saves (the fraud stage at 1M rows: 1.5 s less), and MEMORY_AND_DISK spills anyway
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
}


class SparkJarsUnavailable(RuntimeError):
    """The JVM packages could not be fetched and are not in the Ivy cache."""


def is_s3(uri: str | None) -> bool:
    return bool(uri) and str(uri).startswith(("s3://", "s3a://"))


def packages(s3: bool) -> list[str]:
    return [DELTA_PACKAGE, *([HADOOP_AWS_PACKAGE] if s3 else [])]


def s3a_conf(env: dict[str, str] | None = None) -> dict[str, str]:
    """S3A settings for `s3://` and `s3a://` paths, from the FLUXO_S3_* variables."""
    env = os.environ if env is None else env
    conf = {
        # s3:// is what AWS Glue accepts; locally S3A serves both schemes
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
        "spark.hadoop.fs.s3a.endpoint.region": env.get("FLUXO_AWS_REGION") or env.get("AWS_REGION") or "us-east-1",
    }
    endpoint = env.get("FLUXO_S3_ENDPOINT")
    if endpoint:
        conf.update({
            "spark.hadoop.fs.s3a.endpoint": endpoint,
            "spark.hadoop.fs.s3a.path.style.access": "true",
            "spark.hadoop.fs.s3a.connection.ssl.enabled": str(endpoint.startswith("https")).lower(),
            # a store on this network that stops answering fails the stage in seconds, not minutes
            "spark.hadoop.fs.s3a.attempts.maximum": "2",
            "spark.hadoop.fs.s3a.retry.limit": "3",
            "spark.hadoop.fs.s3a.retry.interval": "500ms",
            "spark.hadoop.fs.s3a.connection.establish.timeout": "5s",
        })
    if env.get("FLUXO_S3_ACCESS_KEY"):
        conf.update({
            "spark.hadoop.fs.s3a.access.key": env["FLUXO_S3_ACCESS_KEY"],
            "spark.hadoop.fs.s3a.secret.key": env.get("FLUXO_S3_SECRET_KEY", ""),
            "spark.hadoop.fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        })
    return conf


def local_conf(app: str, s3: bool, env: dict[str, str] | None = None) -> dict[str, str]:
    """Everything a local session needs: master, memory, loopback binding, jars, Delta, S3A."""
    env = os.environ if env is None else env
    partitions = env.get("FLUXO_SPARK_SHUFFLE_PARTITIONS", "8")
    conf = {
        "spark.app.name": app,
        "spark.master": env.get("FLUXO_SPARK_MASTER", "local[*]"),
        "spark.driver.memory": env.get("FLUXO_SPARK_DRIVER_MEMORY", "4g"),
        "spark.sql.shuffle.partitions": partitions,
        # Delta rebuilds a table's snapshot state (one row per file) after every commit in 50 tasks by
        # default: on two cores that was 1.2-1.5 s of each 20k-row MERGE and ~0.2 s of each read
        "spark.databricks.delta.snapshotPartitions": partitions,
        # a development box: nothing listens beyond loopback
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.ui.enabled": env.get("FLUXO_SPARK_UI", "false"),
        "spark.ui.showConsoleProgress": "false",
        # PySpark otherwise walks the Python stack on every Column function call, for the line an
        # analysis error names in its DataFrame context (the stage's traceback names it as well):
        # 0.3-0.5 s of a 20k-row fraud stage. A static setting: a cluster's own configuration decides.
        "spark.python.sql.dataFrameDebugging.enabled": "false",
        "spark.jars.packages": ",".join(packages(s3)),
        **DELTA_SQL_CONF,
        **RUNTIME_CONF,
    }
    if s3:
        conf.update(s3a_conf(env))
        if conf["spark.master"].startswith("local"):
            # Plain Parquet outputs (staged rows, quarantine, metrics) commit each file by one rename
            # (an S3 copy) instead of two: 0.6 s less for each small write, 1.3-1.8 s for a 1M-row one.
            # Safe because a local master does not retry a failed task; a failed stage leaves files
            # without _SUCCESS, which its rerun overwrites. AWS Glue commits through EMRFS instead.
            conf["spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version"] = "2"
        logstore = env.get("FLUXO_DELTA_LOGSTORE_JAR")
        if logstore:
            conf["spark.jars"] = logstore
            conf.update(logstore_conf())
    return conf


def logstore_conf() -> dict[str, str]:
    return {f"spark.delta.logStore.{scheme}.impl": LOGSTORE_CLASS for scheme in ("s3", "s3a")}


def missing_jars(coordinates: list[str], ivy: Path = IVY_CACHE) -> list[str]:
    """The coordinates whose jar is not in the Ivy cache."""
    missing = []
    for coordinate in coordinates:
        group, artifact, version = coordinate.split(":")
        if not (ivy / "jars" / f"{group}_{artifact}-{version}.jar").is_file():
            missing.append(coordinate)
    return missing


def local_session(app: str, s3: bool = False, extra: dict[str, str] | None = None):
    """A local SparkSession with Delta (and S3A when `s3`); a clear error when the jars cannot be had."""
    from pyspark.sql import SparkSession

    # Python workers must be this interpreter (the venv with pyarrow), not whatever python3 is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # pyspark marks a process that opened a Spark Connect session (and the children that inherit its
    # environment) as Connect-only; a local session is asked for explicitly (FLUXO_SPARK_REMOTE is ours)
    for name in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE"):
        os.environ.pop(name, None)
    conf = {**local_conf(app, s3), **(extra or {})}
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:
        ivy = Path(conf.get("spark.jars.ivy", IVY_CACHE))
        missing = missing_jars(conf["spark.jars.packages"].split(","), ivy)
        if missing:
            raise SparkJarsUnavailable(
                f"Spark could not start: the JVM packages {', '.join(missing)} could not be fetched from Maven "
                f"Central and are not in the Ivy cache {ivy}; check access to https://repo1.maven.org "
                "(a later run uses the cache), or warm it with `python -m fluxo_platform.jvm`"
            ) from exc
        raise
    spark.sparkContext.setLogLevel(os.environ.get("FLUXO_SPARK_LOG_LEVEL", "ERROR"))
    return spark


def remote_session(url: str):
    """A session on a Spark Connect server (`sc://host:port`): the local stack's warm Spark, or a
    cluster. The server carries Delta and S3 (see `connect_server_conf`); this process only plans."""
    from pyspark.sql import SparkSession

    return SparkSession.builder.remote(url).getOrCreate()


def connect_server_conf(port: int) -> dict[str, str]:
    """What a local Spark Connect server adds to a local session's settings (`local_conf`: Delta, S3A
    for the stack's S3 server, the log store), bound to 127.0.0.1:port. Stages connect to it instead
    of each starting a JVM."""
    return {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        # stages of several runs share one JVM: release a finished session's state promptly
        "spark.connect.session.manager.defaultSessionTimeout": "15m",
        # a stage's local checkpoints are freed once the JVM collects them (fluxo.glue_runtime.persist)
        "spark.cleaner.periodicGC.interval": "2min",
        # Spark keys its cache of generated classes by class loader, and a session with isolated
        # artifacts (which Spark's own Connect server forces) has a loader of its own, so every stage
        # compiled all of its code again: 120-180 classes for the fraud stage of a 20k day. Stages
        # add no artifacts (jars, files, Python modules): every session shares the server's loader.
        "spark.sql.artifact.isolation.enabled": "false",
        "spark.sql.artifact.isolation.alwaysApplyClassloader": "false",
        # room for the generated classes of a day's six stages and Delta's own queries (default 100)
        "spark.sql.codegen.cache.maxEntries": "1000",
    }


def warm(s3: bool = True) -> list[str]:
    """Fetch the JVM packages into the Ivy cache now (a short session), so stages start without network."""
    spark = local_session("fluxo-warm-jars", s3=s3, extra={"spark.master": "local[1]", "spark.driver.memory": "512m"})
    spark.stop()
    return packages(s3)

