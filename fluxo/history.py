"""The outlier history: a Delta Lake table written with `deltalake` (delta-rs), no Spark jars.

Table: `Lake(root).outlier_history`, one row per (transaction_id, method) that a
detector flagged, partitioned by event_date, columns `OUTLIER`.

Write rule (`merge_outliers`), so a rerun of a day adds nothing:
- MERGE on (transaction_id, method);
- matched and any of score/threshold/baseline/scale changed -> the score fields,
  detected_at and run_id are updated (the transaction columns too); an unchanged
  match is left alone, so detected_at/run_id keep the run that first produced that
  score and a rerun on the same data commits no new version at all;
- not matched -> inserted;
- a target row of one of the event dates the run recomputed that the source no longer
  flags (e.g. its baseline moved after late data) -> deleted. The run read those days
  in full, so its result is the whole truth for them; earlier versions keep the old rows.

Readers travel in time with `read_outliers(uri, version=...)` or `as_of=datetime`;
`table_history` lists the commits; `maintain` compacts and vacuums.

Nothing here imports Spark: the Airflow worker and the API can use it too.
"""

from __future__ import annotations

import os
from datetime import date, datetime
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa

from fluxo.contract import OUTLIER, Contract

MERGE_KEY = OUTLIER.key
SCORE_FIELDS = ("score", "threshold", "baseline", "scale")
PARTITION_BY = ("event_date",)


def _s3_settings() -> dict[str, str]:
    # the FLUXO_S3_* variables the operator passes to a stage; on AWS Glue the job role supplies credentials
    env = os.environ
    return {
        "region": env.get("FLUXO_AWS_REGION") or env.get("AWS_REGION") or "us-east-1",
        "endpoint": env.get("FLUXO_S3_ENDPOINT", ""),
        "access_key": env.get("FLUXO_S3_ACCESS_KEY", ""),
        "secret_key": env.get("FLUXO_S3_SECRET_KEY", ""),
    }


def storage_options(uri: str) -> dict[str, str] | None:
    """delta-rs object-store options for an s3:// table (None for a local path).

    Endpoint and credentials come from the FLUXO_S3_* settings; anything unset falls
    back to delta-rs' own AWS_* environment/instance-profile lookup (AWS Glue's role).
    Commits use S3 conditional puts, so no DynamoDB lock table is needed.
    """
    if not uri.startswith(("s3://", "s3a://")):
        return None
    s = _s3_settings()
    options = {"AWS_REGION": s["region"], "aws_conditional_put": "etag"}
    if s["endpoint"]:
        options["AWS_ENDPOINT_URL"] = s["endpoint"]
        options["AWS_ALLOW_HTTP"] = "true" if urlparse(s["endpoint"]).scheme == "http" else "false"
        options["AWS_S3_ADDRESSING_STYLE"] = "path"
    if s["access_key"]:
        options["AWS_ACCESS_KEY_ID"] = s["access_key"]
        options["AWS_SECRET_ACCESS_KEY"] = s["secret_key"]
    return options


def _table_uri(uri: str) -> str:
    return uri.replace("s3a://", "s3://", 1).removeprefix("file://")


def open_table(uri: str, version: int | None = None):
    """The DeltaTable at uri (optionally at a version), or None when it does not exist yet."""
    from deltalake import DeltaTable

    uri_, options = _table_uri(uri), storage_options(uri)
    if not DeltaTable.is_deltatable(uri_, storage_options=options):
        return None
    return DeltaTable(uri_, version=version, storage_options=options)


def ensure_table(uri: str):
    """Open the outlier history, creating it (empty, partitioned by event_date) the first time."""
    from deltalake import DeltaTable

    table = open_table(uri)
    if table is not None:
        return table
    return DeltaTable.create(
        _table_uri(uri), OUTLIER.arrow_schema(), mode="ignore", partition_by=list(PARTITION_BY),
        name="outlier_history", description="Outliers per (transaction_id, method); see fluxo.history",
        storage_options=storage_options(uri),
    )


def conform_arrow(rows: pa.Table, contract: Contract = OUTLIER) -> pa.Table:
    """Exactly the contract's columns in order, cast to its Arrow schema (UTC timestamps kept)."""
    schema = contract.arrow_schema()
    return pa.Table.from_arrays([rows.column(f.name).cast(f.type) for f in schema], schema=schema)


def _sql_date(d: str | date) -> str:
    return f"DATE '{date.fromisoformat(str(d)).isoformat()}'"


def merge_outliers(uri: str, rows: pa.Table, event_dates: list[str]) -> dict[str, Any]:
    """MERGE a run's outliers (rows of `OUTLIER`) into the history; see the module docstring.

    `event_dates` are the days the run recomputed in full; only their rows may be deleted.
    Returns delta-rs' merge metrics plus the table version after the merge.
    """
    table = ensure_table(uri)
    source = conform_arrow(rows)
    on = " AND ".join(f"target.{k} = source.{k}" for k in MERGE_KEY)
    changed = " OR ".join(f"(target.{c} IS DISTINCT FROM source.{c})" for c in SCORE_FIELDS)
    updates = {c: f"source.{c}" for c in OUTLIER.names if c not in MERGE_KEY}
    merger = (
        table.merge(source, on, source_alias="source", target_alias="target")
        .when_matched_update(updates, predicate=changed)
        .when_not_matched_insert_all()
    )
    if event_dates:
        recomputed = ", ".join(_sql_date(d) for d in sorted(set(event_dates)))
        merger = merger.when_not_matched_by_source_delete(predicate=f"target.event_date IN ({recomputed})")
    metrics = merger.execute()
    metrics["version"] = table.version()
    return metrics


def read_outliers(
    uri: str,
    version: int | None = None,
    as_of: datetime | str | None = None,
    event_dates: list[str] | None = None,
) -> pa.Table:
    """The history as of a version number or a point in time (latest when neither), sorted by key.

    A naive `as_of` datetime is taken as UTC. `event_dates` prunes partitions.
    """
    if version is not None and as_of is not None:
        raise ValueError("give either version or as_of, not both")
    table = open_table(uri)
    if table is None:
        return OUTLIER.arrow_schema().empty_table()
    if version is not None:
        table.load_as_version(version)
    elif as_of is not None:
        table.load_as_version(as_of)
    filters = [("event_date", "in", sorted({date.fromisoformat(str(d)) for d in event_dates}))] if event_dates else None
    data = table.to_pyarrow_table(filters=filters)
    return conform_arrow(data).sort_by([(k, "ascending") for k in MERGE_KEY])


def table_history(uri: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The table's commits, newest first: version, timestamp (UTC datetime), operation, metrics."""
    from datetime import timezone

    table = open_table(uri)
    if table is None:
        return []
    commits = []
    for h in table.history(limit):
        commits.append({
            "version": h.get("version"),
            "timestamp": datetime.fromtimestamp(h["timestamp"] / 1000, tz=timezone.utc),
            "operation": h.get("operation"),
            "parameters": h.get("operationParameters") or {},
            "metrics": h.get("operationMetrics") or {},
        })
    return sorted(commits, key=lambda c: c["version"], reverse=True)


def maintain(uri: str, retention_hours: int = 168, dry_run: bool = False, target_size: int | None = None) -> dict[str, Any]:
    """Compact small files (optimize) and vacuum files unreferenced for longer than retention_hours.

    Vacuum only deletes files that left the table more than `retention_hours` ago, so
    time travel keeps working inside that window. The retention is the operator's
    explicit setting, hence delta-rs' own minimum (the table's
    deletedFileRetentionDuration, 1 week by default) is not enforced on top of it.
    In dry-run mode nothing is rewritten or deleted: the files vacuum would delete are listed.
    """
    if retention_hours < 0:
        raise ValueError("retention_hours must be >= 0")
    table = open_table(uri)
    if table is None:
        return {"table_exists": False, "compacted": {}, "vacuumed_files": 0, "dry_run": dry_run}
    version_before = table.version()
    compacted: dict[str, Any] = {}
    if not dry_run:
        compacted = table.optimize.compact(target_size=target_size)
    vacuumed = table.vacuum(
        retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=False,
    )
    return {
        "table_exists": True,
        "dry_run": dry_run,
        "retention_hours": retention_hours,
        "version_before": version_before,
        "version_after": table.version(),
        "files_added": int(compacted.get("numFilesAdded", 0)),
        "files_removed": int(compacted.get("numFilesRemoved", 0)),
        "vacuumed_files": len(vacuumed),
        "vacuumed": sorted(vacuumed)[:100],
    }
