"""History maintenance: compact (optimize) and vacuum the outlier Delta table.

    history_maintenance.py --JOB_NAME history_maintenance --lake_root ROOT
                           [--retention_hours 168] [--dry_run false] [--ingest_date YYYY-MM-DD]

Vacuum deletes only files that left the table more than retention_hours ago, so time travel
keeps working inside that window (rule in fluxo.history.maintain). With --dry_run true
nothing is rewritten or deleted; the files vacuum would delete are counted. Stats:
work/stats/ingest_date=D/history_maintenance.json (D = --ingest_date, default today UTC).
"""

from __future__ import annotations

from datetime import datetime, timezone

from fluxo import history
from fluxo.glue_runtime import run_stage, start_stage, write_stats

STAGE = "history_maintenance"


def _flag(value: str) -> bool:
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"--dry_run must be true or false, not {value!r}")
    return text in ("true", "1", "yes")


def main() -> None:
    rt = start_stage(["lake_root"], {"retention_hours": "168", "dry_run": "false", "ingest_date": None})
    retention_hours = int(rt.args["retention_hours"])
    dry_run = _flag(rt.args["dry_run"])
    day = rt.args["ingest_date"] or datetime.now(timezone.utc).date().isoformat()
    result = history.maintain(rt.lake.outlier_history, retention_hours=retention_hours, dry_run=dry_run)
    print(f"{STAGE}: {result}")
    write_stats(rt.spark, rt.lake.root, day, STAGE, {"stage": STAGE, **result})
    rt.finish()


if __name__ == "__main__":
    run_stage(main)
