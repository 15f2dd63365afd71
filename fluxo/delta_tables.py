"""Delta Lake mechanics every table of the lake shares, in Delta's SQL.

SQL runs the same on a classic session (AWS Glue 6.0 with `--datalake-formats delta`, a local
session from `fluxo.spark`) and over Spark Connect, where delta-spark's Python `DeltaTable`
API has no server side: creating a partitioned table, MERGE, tagging a commit with the run
that made it (its userMetadata, so `DESCRIBE HISTORY` tells lineage and a stage finds its own
commit's version and metrics among concurrent ones), retrying a commit that lost a race, and
compaction + vacuum for the maintenance DAG.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from fluxo import storage
from fluxo.tokenize import opaque_id

USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
# How many times a commit that lost a race to a concurrent one on the same files is tried again.
CONFLICT_RETRIES = 5
# Delta's error conditions for a commit that lost a race (the Java classes end alike).
_CONFLICTS = (
    "DELTA_CONCURRENT_APPEND", "DELTA_CONCURRENT_DELETE_READ", "DELTA_CONCURRENT_DELETE_DELETE",
    "DELTA_CONCURRENT_TRANSACTION", "DELTA_CONCURRENT_WRITE", "DELTA_METADATA_CHANGED", "DELTA_PROTOCOL_CHANGED",
    "ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException", "ConcurrentWriteException", "MetadataChangedException",
    "ProtocolChangedException",
    # two writers creating one table at the same instant: the loser sees the winner's first files
    "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION",
)


def table(uri: str) -> str:
    """The SQL name of the Delta table at a path."""
    return f"delta.`{uri}`"


def is_table(spark, uri: str) -> bool:
    return storage.exists(f"{uri.rstrip('/')}/_delta_log")


def ensure_table(spark, uri: str, schema: T.StructType, partition_by: tuple[str, ...]) -> None:
    """The Delta table at uri, created empty the first time (two creators at once: one wins, the
    other's retry finds the table)."""
    columns = ", ".join(
        f"`{f.name}` {f.dataType.simpleString()}{'' if f.nullable else ' NOT NULL'}" for f in schema.fields
    )
    partitions = ", ".join(f"`{c}`" for c in partition_by)
    spark.sql(f"CREATE TABLE IF NOT EXISTS {table(uri)} ({columns}) USING DELTA PARTITIONED BY ({partitions})")


def history(spark, uri: str, limit: int = 50) -> list[dict[str, Any]]:
    """The table's latest commits, newest first (DESCRIBE HISTORY rows as dicts)."""
    return [row.asDict(recursive=True) for row in spark.sql(f"DESCRIBE HISTORY {table(uri)} LIMIT {int(limit)}").collect()]


def current_version(spark, uri: str) -> int | None:
    if not is_table(spark, uri):
        return None
    return history(spark, uri, 1)[0]["version"]


def marker(**info: Any) -> str:
    """The userMetadata of one commit: the run's stage, day and run id, plus a nonce that
    tells this attempt's commit from an earlier attempt's."""
    return json.dumps({**info, "commit": opaque_id()}, sort_keys=True, default=str)


@contextlib.contextmanager
def settings(spark, conf: dict[str, str]) -> Iterator[None]:
    """Session settings for the block only."""
    before = {key: spark.conf.get(key, None) for key in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def tagged(spark, user_metadata: str):
    """Commits made inside the block carry `user_metadata`."""
    return settings(spark, {USER_METADATA: user_metadata})


def commit_with(spark, uri: str, user_metadata: str, depth: int = 50) -> dict[str, Any] | None:
    """The newest commit tagged `user_metadata` (version, operation, operationMetrics…), or None."""
    return next((c for c in history(spark, uri, depth) if c["userMetadata"] == user_metadata), None)


def merge(spark, uri: str, source: DataFrame, on: str, clauses: list[str], commit_info: dict[str, Any]) -> dict | None:
    """`MERGE INTO` the table (alias `target`) from `source` (alias `source`) in one commit tagged with
    `commit_info`; returns that commit (its version and operationMetrics), None when Delta made none."""
    # The view is left to end with the session: dropping a temp view uncaches its plan, and the
    # source is usually a persisted frame its stage reads again after the MERGE (the outlier
    # summary at 1M rows read it back in 0.6 s, or recomputed it in 9.8 s after a drop).
    view = f"fluxo_merge_source_{uuid.uuid4().hex}"
    source.createOrReplaceTempView(view)
    tag = marker(**commit_info)
    with tagged(spark, tag):
        spark.sql(f"MERGE INTO {table(uri)} AS target USING {view} AS source ON {on} {' '.join(clauses)}")
    return commit_with(spark, uri, tag)


def is_conflict(exc: BaseException) -> bool:
    """A commit that lost a race to a concurrent one (Delta's concurrent-modification family), as
    PySpark reports it on a classic session or over Spark Connect."""
    text = f"{type(exc).__name__} {exc}"
    return any(name in text for name in _CONFLICTS)


def with_retry(commit: Callable[[], Any], retries: int = CONFLICT_RETRIES) -> Any:
    """Run `commit` again (it re-reads the table) when it lost a race to a concurrent commit."""
    for attempt in range(retries + 1):
        try:
            return commit()
        except Exception as exc:
            if attempt == retries or not is_conflict(exc):
                raise
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


# Vacuum with the operator's retention (Delta's 7-day minimum is not enforced on top of it), logged
# in the table's history, listing with a handful of tasks (the default 10,000 tasks cost a minute
# on a small table).
VACUUM_CONF = {
    "spark.databricks.delta.retentionDurationCheck.enabled": "false",
    "spark.databricks.delta.vacuum.logging.enabled": "true",
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "8",
}


def maintain(spark, uri: str, retention_hours: int = 168, dry_run: bool = False) -> dict[str, Any]:
    """Compact small files (OPTIMIZE) and vacuum files unreferenced for longer than retention_hours.

    Vacuum only deletes files that left the table more than `retention_hours` ago, so time
    travel keeps working inside that window (VACUUM_CONF). In dry-run mode nothing is
    rewritten or deleted: the files vacuum would delete are counted.
    """
    if retention_hours < 0:
        raise ValueError("retention_hours must be >= 0")
    if not is_table(spark, uri):
        return {"table_exists": False, "files_added": 0, "files_removed": 0, "vacuumed_files": 0, "dry_run": dry_run}
    version_before = current_version(spark, uri)
    added = removed = 0
    if not dry_run:
        metrics = spark.sql(f"OPTIMIZE {table(uri)}").collect()[0]["metrics"]
        added, removed = int(metrics["numFilesAdded"]), int(metrics["numFilesRemoved"])
    vacuum = f"VACUUM {table(uri)} RETAIN {int(retention_hours)} HOURS"
    with settings(spark, VACUUM_CONF):
        if dry_run:
            count = spark.sql(vacuum + " DRY RUN").count()  # the files it would delete
        else:
            spark.sql(vacuum).collect()
            finished = next((c for c in history(spark, uri, 5) if c["operation"] == "VACUUM END"), None)
            count = int((finished["operationMetrics"] or {}).get("numDeletedFiles", 0)) if finished else 0
    return {
        "table_exists": True,
        "dry_run": dry_run,
        "retention_hours": retention_hours,
        "version_before": version_before,
        "version_after": current_version(spark, uri),
        "files_added": added,
        "files_removed": removed,
        "vacuumed_files": count,
    }
