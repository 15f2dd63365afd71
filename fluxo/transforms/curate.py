"""Curate: merge a run's staged rows into the curated transactions, one row per transaction_id.

Dedupe rule (also used inside a batch by standardize, see `_common.dedupe_order`):
among all copies of a transaction_id, keep the one with

1. the earliest `ingested_at` (the first time the platform saw it),
2. on a tie, the source with the highest priority: api, db, kafka, s3,
3. on a tie, the smallest `batch_id`,
4. any remaining tie is broken by the other contract columns in order, so the
   surviving row never depends on partitioning or task order.

Rerunning a day therefore rewrites its touched partitions with the same rows.

Only the curated partitions (`event_date=YYYY-MM-DD`, UTC) that the staged rows
touch are read and replaced; a transaction whose copies carry event times on
different days is deduplicated only if both days are touched by the run.

Replacing partitions (`replace_partitions`) is all-or-nothing across failures:

1. the merged rows are written to `work/curate/staging/run=R/event_date=D/` — the
   curated zone is untouched, so a failure here leaves the previous data intact
   (the leftover staging folder is discarded by the next run);
2. the journal `work/curate/journal/run=R.json` lists, per touched partition, the
   exact files it must hold. Writing it (one object PUT on S3, one file locally)
   is the commit point;
3. each partition is then made to hold exactly those files: files not in the list
   are deleted, listed files missing from it are moved in from staging (file names
   carry the run's write id, so old and new never collide);
4. staging, then the journal, are deleted.

`recover` (run first by every curate run) finishes any committed journal with
step 3 — which is idempotent, it only looks at what each partition holds — and
discards uncommitted staging folders. So after a crash anywhere, the retry leaves
either the old or the new content of every partition, never a mix, a gap or a
double. The same protocol is correct on S3 (a file "move" there is copy + delete;
a partially moved file is still whole in staging until step 4). What it does not
give is reader isolation: a reader listing a partition during step 3 (seconds)
may see part of the change; readers run after the stage (the DAG orders them).
Two curate runs must not overlap (each one's recovery would discard the other's
staging): the DAG runs this stage one at a time.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import NamedTuple

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fluxo.contract import TRANSACTION
from fluxo.glue_runtime import path_exists
from fluxo.transforms._common import conform, empty, event_date, rank_copies

PARTITION_COLUMN = "event_date"


class Merged(NamedTuple):
    ranked: DataFrame  # every staged and existing row with `_origin` and `_copy_rank`
    curated: DataFrame  # the kept rows: TRANSACTION columns + event_date


def merge(staged: DataFrame, existing: DataFrame) -> Merged:
    """Union staged rows with the existing rows of the touched partitions and keep one per id."""
    union = conform(staged, TRANSACTION).withColumn("_origin", F.lit("staged")).unionByName(
        conform(existing, TRANSACTION).withColumn("_origin", F.lit("curated"))
    )
    ranked = rank_copies(union)
    kept = conform(ranked.where(F.col("_copy_rank") == 1), TRANSACTION)
    return Merged(ranked=ranked, curated=kept.withColumn(PARTITION_COLUMN, event_date()))


def curate_stats(ranked: DataFrame, partitions: list[str]) -> dict:
    """Counts from the ranked union in one small aggregation."""
    row = ranked.agg(
        F.count(F.when(F.col("_origin") == "staged", 1)).alias("staged"),
        F.count(F.when(F.col("_origin") == "curated", 1)).alias("existing"),
        F.count(F.when(F.col("_copy_rank") == 1, 1)).alias("kept"),
    ).first()
    staged, existing, kept = row["staged"], row["existing"], row["kept"]
    return {
        "stage": "curate",
        "staged": staged,
        "curated_rows_in_touched_partitions": existing,
        "new_rows": kept - existing,
        "duplicates_dropped": staged + existing - kept,
        "dates": partitions,
    }


def partition_paths(curated_root: str, dates: list[str]) -> list[str]:
    return [f"{curated_root.rstrip('/')}/{PARTITION_COLUMN}={d}" for d in dates]


def read_partitions(spark, curated_root: str, dates: list[str]) -> DataFrame:
    """The curated rows of the given event dates (partitions that do not exist yet are empty)."""
    present = [p for p in partition_paths(curated_root, dates) if path_exists(spark, p)]
    if not present:
        return empty(spark, TRANSACTION)
    return conform(spark.read.option("basePath", curated_root).parquet(*present), TRANSACTION)


def read_staged(spark, staged_path: str, ingest_date: str) -> DataFrame:
    if not path_exists(spark, staged_path):
        raise FileNotFoundError(f"no staged data at {staged_path}: run standardize for {ingest_date} first")
    return spark.read.parquet(staged_path)


# --- atomic partition replacement ------------------------------------------------------


class CurateFault(RuntimeError):
    """A failure injected on purpose (tests, drills): the stage dies mid-write."""


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"


def _fs(spark, path: str):
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath, hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def _children(spark, path: str) -> list:
    hpath, fs = _fs(spark, path)
    return list(fs.listStatus(hpath)) if fs.exists(hpath) else []


def _data_file(name: str) -> bool:
    return not name.startswith((".", "_"))


def _staging(work_root: str, run_id: str) -> str:
    return f"{work_root.rstrip('/')}/staging/run={run_id}"


def _journal(work_root: str, run_id: str) -> str:
    return f"{work_root.rstrip('/')}/journal/run={run_id}.json"


def _write_journal(spark, path: str, body: dict) -> None:
    hpath, fs = _fs(spark, path)
    fs.setWriteChecksum(False)
    out = fs.create(hpath, True)
    try:
        out.write(bytearray(json.dumps(body, sort_keys=True).encode("utf-8")))
    finally:
        out.close()


def _read_journal(spark, path: str) -> dict | None:
    """The journal's content, or None when it is not a complete journal (not committed)."""
    hpath, fs = _fs(spark, path)
    stream = fs.open(hpath)
    try:
        scanner = spark.sparkContext._jvm.java.util.Scanner(stream, "UTF-8").useDelimiter("\\A")
        text = scanner.next() if scanner.hasNext() else ""
    finally:
        stream.close()
    try:
        body = json.loads(text)
    except ValueError:
        return None
    return body if isinstance(body, dict) and isinstance(body.get("partitions"), dict) else None


def _install_partition(spark, curated_root: str, staging: str, partition: str, files: list[str]) -> None:
    """Make curated/<partition> hold exactly `files` (idempotent: safe to repeat after a crash)."""
    jvm = spark.sparkContext._jvm
    final = f"{curated_root.rstrip('/')}/{partition}"
    wanted = set(files)
    final_path, fs = _fs(spark, final)
    for status in _children(spark, final):
        if status.getPath().getName() not in wanted:
            fs.delete(status.getPath(), True)
    for name in files:
        target = jvm.org.apache.hadoop.fs.Path(final_path, name)
        if fs.exists(target):
            continue
        source = jvm.org.apache.hadoop.fs.Path(f"{staging}/{partition}/{name}")
        fs.mkdirs(final_path)
        if not fs.rename(source, target):
            raise OSError(f"could not move {source} to {target}")
    if not files and fs.exists(final_path):
        fs.delete(final_path, True)


def _apply(spark, curated_root: str, work_root: str, run_id: str, journal: dict, fail_after: int | None = None) -> None:
    staging = _staging(work_root, run_id)
    for done, (partition, files) in enumerate(sorted(journal["partitions"].items())):
        if fail_after is not None and done >= fail_after:
            raise CurateFault(f"injected failure after {done} installed partition(s) of run {run_id}")
        _install_partition(spark, curated_root, staging, partition, files)
    for path in (staging, _journal(work_root, run_id)):
        hpath, fs = _fs(spark, path)
        fs.delete(hpath, True)


def recover(spark, curated_root: str, work_root: str) -> dict:
    """Finish every committed run, discard every uncommitted staging folder."""
    finished, discarded = [], []
    for status in sorted(_children(spark, f"{work_root.rstrip('/')}/journal"), key=lambda s: s.getPath().getName()):
        name = status.getPath().getName()
        run_id = name[len("run="):-len(".json")] if name.startswith("run=") and name.endswith(".json") else None
        journal = _read_journal(spark, status.getPath().toString()) if run_id else None
        if journal is None:
            _fs(spark, status.getPath().toString())[1].delete(status.getPath(), False)
            continue
        _apply(spark, curated_root, work_root, run_id, journal)
        finished.append(run_id)
    for status in _children(spark, f"{work_root.rstrip('/')}/staging"):
        discarded.append(status.getPath().getName())
        _fs(spark, status.getPath().toString())[1].delete(status.getPath(), True)
    return {"finished": finished, "discarded": discarded}


def replace_partitions(
    spark,
    curated: DataFrame,
    curated_root: str,
    work_root: str,
    dates: list[str],
    run_id: str | None = None,
    fault: str | None = None,
) -> dict:
    """Replace the curated partitions of `dates` by the rows of `curated` (with `event_date`),
    all or nothing (see the module docstring). Call `recover` before reading the partitions.

    `fault` injects a failure: `"before_commit"` (after the staging write) or
    `"after_partitions:N"` (after N partitions were installed)."""
    run_id = run_id or new_run_id()
    staging = _staging(work_root, run_id)
    curated.repartition(PARTITION_COLUMN).write.mode("overwrite").partitionBy(PARTITION_COLUMN).parquet(staging)
    partitions = {f"{PARTITION_COLUMN}={d}": [] for d in dates}
    for status in _children(spark, staging):
        name = status.getPath().getName()
        if status.isDirectory() and name.startswith(f"{PARTITION_COLUMN}="):
            files = [c.getPath().getName() for c in _children(spark, status.getPath().toString())]
            partitions[name] = sorted(f for f in files if _data_file(f))
    if fault == "before_commit":
        raise CurateFault(f"injected failure before the commit of run {run_id}")
    journal = {"run_id": run_id, "curated_root": curated_root, "partitions": partitions}
    _write_journal(spark, _journal(work_root, run_id), journal)
    fail_after = int(fault.split(":", 1)[1]) if fault and fault.startswith("after_partitions:") else None
    _apply(spark, curated_root, work_root, run_id, journal, fail_after)
    return {"run_id": run_id, "partitions": sorted(partitions)}
