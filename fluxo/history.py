"""The history zone: Delta tables of flagged transactions, written by Spark (as AWS Glue does).

`Lake(root).outlier_history` holds one row per (transaction_id, method) that a detector
flagged (`OUTLIER`), and `Lake(root).fraud_alerts` one row per transaction a fraud rule
flagged (`FRAUD_ALERT`, keyed by (event_date, transaction_id)), both partitioned by event_date
and both written by the same rule.

Write rule (`merge_flagged`), so a rerun of a day adds nothing:
- MERGE on the table's key;
- matched and any of the score fields changed -> the row is updated (detected_at and run_id
  too); an unchanged match is left alone, so detected_at/run_id keep the run that first
  produced that score;
- not matched -> inserted;
- a target row of one of the event dates the run recomputed that the source no longer
  flags (e.g. its baseline moved after late data) -> deleted. The run read those days in
  full, so its result is the whole truth for them; earlier versions keep the old rows.

Time travel (`versionAsOf`/`timestampAsOf`) and `DESCRIBE HISTORY` work with any Delta
reader: Spark, or delta-rs where no Spark runs (`fluxo_platform.lakefs.read_delta` for the
API and tests). Compaction and vacuum: `fluxo.delta_tables.maintain`.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pyspark.sql import DataFrame

from fluxo import delta_tables
from fluxo.contract import FRAUD_ALERT, OUTLIER, Contract
from fluxo.transforms._common import conform

PARTITION_BY = ("event_date",)
OUTLIER_SCORE_FIELDS = ("score", "threshold", "baseline", "scale")
# An alert is "changed" when anything but its run bookkeeping differs (rules, score, evidence).
FRAUD_ALERT_FIELDS = tuple(n for n in FRAUD_ALERT.names if n not in (*FRAUD_ALERT.key, "detected_at", "run_id"))


def _sql_date(d: str | date) -> str:
    return f"DATE '{date.fromisoformat(str(d)).isoformat()}'"


def merge_flagged(
    spark,
    uri: str,
    rows: DataFrame,
    recomputed_dates: list[str],
    commit_info: dict[str, Any],
    contract: Contract = OUTLIER,
    score_fields: tuple[str, ...] = OUTLIER_SCORE_FIELDS,
) -> dict[str, Any]:
    """MERGE a run's flagged rows (of `contract`) into the history table; see the module docstring.

    `recomputed_dates` are the days the run recomputed in full; only their rows may be deleted.
    Returns the commit's version and its inserted/updated/deleted row counts.
    """
    delta_tables.ensure_table(spark, uri, contract.spark_schema(), PARTITION_BY)
    changed = " OR ".join(f"NOT (target.{c} <=> source.{c})" for c in score_fields)
    clauses = [f"WHEN MATCHED AND ({changed}) THEN UPDATE SET *", "WHEN NOT MATCHED THEN INSERT *"]
    if recomputed_dates:
        days = ", ".join(_sql_date(d) for d in sorted(set(recomputed_dates)))
        clauses.append(f"WHEN NOT MATCHED BY SOURCE AND target.event_date IN ({days}) THEN DELETE")
    commit = delta_tables.merge(
        spark, uri, conform(rows, contract), on=" AND ".join(f"target.{k} = source.{k}" for k in contract.key),
        clauses=clauses, commit_info=commit_info,
    )
    if commit is None:  # nothing to change: Delta made no commit
        return {"version": delta_tables.current_version(spark, uri), "inserted": 0, "updated": 0, "deleted": 0}
    metrics = commit.get("operationMetrics") or {}
    return {
        "version": commit["version"],
        "inserted": int(metrics.get("numTargetRowsInserted", 0)),
        "updated": int(metrics.get("numTargetRowsUpdated", 0)),
        "deleted": int(metrics.get("numTargetRowsDeleted", 0)),
    }
