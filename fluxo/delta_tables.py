"""Delta Lake mechanics every table of the lake shares, through Spark's Delta API (delta-spark).

The same calls run on AWS Glue 6.0 (`--datalake-formats delta`) and on a local session
(`fluxo.spark`): creating a partitioned table, tagging a commit with the run that made it
(its userMetadata, so `DESCRIBE HISTORY` tells lineage and a stage finds its own commit's
version and metrics among concurrent ones), retrying a commit that lost a race, and
compaction + vacuum for the maintenance DAG.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from pyspark.sql import types as T

USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
# How many times a commit that lost a race to a concurrent one on the same files is tried again.
CONFLICT_RETRIES = 5


def is_table(spark, uri: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, uri)


def ensure_table(spark, uri: str, schema: T.StructType, partition_by: tuple[str, ...]):
    """The Delta table at uri, created empty the first time."""
    from delta.tables import DeltaTable

    return (
        DeltaTable.createIfNotExists(spark).location(uri).addColumns(schema).partitionedBy(*partition_by).execute()
    )


def current_version(spark, uri: str) -> int | None:
    from delta.tables import DeltaTable

    if not is_table(spark, uri):
        return None
    return DeltaTable.forPath(spark, uri).history(1).collect()[0]["version"]


def marker(**info: Any) -> str:
    """The userMetadata of one commit: the run's stage, day and run id, plus a nonce that
    tells this attempt's commit from an earlier attempt's."""
    return json.dumps({**info, "commit": uuid.uuid4().hex}, sort_keys=True, default=str)


def tagged(spark, user_metadata: str):
    """Commits made inside the block carry `user_metadata`."""
    return settings(spark, {USER_METADATA: user_metadata})


def commit_with(spark, uri: str, user_metadata: str, depth: int = 50) -> dict[str, Any] | None:
    """The newest commit tagged `user_metadata` (version, operation, operationMetrics…), or None."""
    from delta.tables import DeltaTable

    for row in DeltaTable.forPath(spark, uri).history(depth).collect():
        if row["userMetadata"] == user_metadata:
            return row.asDict(recursive=True)
    return None


def is_conflict(exc: BaseException) -> bool:
    """A commit that lost a race to a concurrent one (Delta's concurrent-modification family),
    whether PySpark converted the Java exception or a builder's call left it a Py4JJavaError."""
    from delta import exceptions as conflict

    python_side = (
        conflict.DeltaConcurrentModificationException, conflict.ConcurrentWriteException,
        conflict.MetadataChangedException, conflict.ProtocolChangedException, conflict.ConcurrentAppendException,
        conflict.ConcurrentDeleteReadException, conflict.ConcurrentDeleteDeleteException,
        conflict.ConcurrentTransactionException,
    )
    if isinstance(exc, python_side):
        return True
    java = getattr(exc, "java_exception", None)
    if java is None:
        return False
    name = java.getClass().getName()
    return name.startswith("io.delta.exceptions.") and ("Concurrent" in name or name.endswith("ChangedException"))


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


def maintain(spark, uri: str, retention_hours: int = 168, dry_run: bool = False) -> dict[str, Any]:
    """Compact small files (OPTIMIZE) and vacuum files unreferenced for longer than retention_hours.

    Vacuum only deletes files that left the table more than `retention_hours` ago, so time
    travel keeps working inside that window (VACUUM_CONF). In dry-run mode nothing is
    rewritten or deleted: the files vacuum would delete are counted.
    """
    from delta.tables import DeltaTable

    if retention_hours < 0:
        raise ValueError("retention_hours must be >= 0")
    if not is_table(spark, uri):
        return {"table_exists": False, "files_added": 0, "files_removed": 0, "vacuumed_files": 0, "dry_run": dry_run}
    table = DeltaTable.forPath(spark, uri)
    version_before = current_version(spark, uri)
    added = removed = 0
    if not dry_run:
        metrics = table.optimize().executeCompaction().collect()[0]["metrics"]
        added, removed = int(metrics["numFilesAdded"]), int(metrics["numFilesRemoved"])
    vacuum = f"VACUUM delta.`{uri}` RETAIN {int(retention_hours)} HOURS"
    with settings(spark, VACUUM_CONF):
        if dry_run:
            count = spark.sql(vacuum + " DRY RUN").count()  # the files it would delete
        else:
            spark.sql(vacuum).collect()
            finished = next((c for c in table.history(5).collect() if c["operation"] == "VACUUM END"), None)
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
