"""Lake maintenance: compact (OPTIMIZE) and vacuum every Delta table of the lake.

    lake_maintenance.py --JOB_NAME lake_maintenance --lake_root ROOT
                        [--retention_hours 168] [--dry_run false] [--ingest_date YYYY-MM-DD]

The tables are `Lake.delta_tables` (curated transactions, the history zone). Vacuum deletes
only files that left a table more than retention_hours ago, so time travel keeps working
inside that window (rule in fluxo.delta_tables.maintain). With --dry_run true nothing is
rewritten or deleted; the files vacuum would delete are counted. Stats:
work/stats/ingest_date=D/lake_maintenance.json (D = --ingest_date, default today UTC).
"""

from __future__ import annotations

from datetime import datetime, timezone

from fluxo import delta_tables
from fluxo.glue_runtime import run_stage, start_stage, write_stats

STAGE = "lake_maintenance"


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
    tables = {}
    for name, uri in rt.lake.delta_tables.items():
        tables[name] = delta_tables.maintain(rt.spark, uri, retention_hours=retention_hours, dry_run=dry_run)
        print(f"{STAGE}: {name}: {tables[name]}")
    write_stats(rt.spark, rt.lake.root, day, STAGE,
                {"stage": STAGE, "retention_hours": retention_hours, "dry_run": dry_run, "tables": tables})
    rt.finish()


if __name__ == "__main__":
    run_stage(main)
