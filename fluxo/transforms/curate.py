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
"""

from __future__ import annotations

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
        "partitions": partitions,
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
