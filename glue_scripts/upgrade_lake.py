"""Upgrade a lake written by fluxo before its curated zone was a Delta table.

    upgrade_lake.py --JOB_NAME upgrade_lake --lake_root ROOT [--copy_from OLD_ROOT]

Earlier versions kept curated/transactions as Parquet files partitioned by event_date and
replaced partitions with a staging folder and a journal (work/curate/). This converts the
folder in place to the Delta table the current curate stage MERGEs into (`CONVERT TO
DELTA`: the data files stay, a transaction log is added, no row is rewritten or lost), after
checking that no earlier curate run was left half-installed. A lake that is already Delta is
left alone, so running it twice is harmless. The outlier history was already a Delta table
(written by delta-rs) and needs nothing. `--copy_from` first copies every zone of an older lake
(e.g. the local folder `.fluxo/lake` a previous `make demo` wrote) into ROOT (e.g. the S3 lake
of the local stack); files already there are kept. Stats: the rows and files found, before and after.
"""

from __future__ import annotations

from datetime import datetime, timezone

from fluxo import delta_tables
from fluxo import storage
from fluxo.glue_runtime import run_stage, start_stage, write_stats
from fluxo.transforms.curate import PARTITION_COLUMN

STAGE = "upgrade_lake"


def main() -> None:
    rt = start_stage(["lake_root"], {"copy_from": None})
    spark, lake = rt.spark, rt.lake
    if rt.args["copy_from"]:
        copied = storage.copy_tree(rt.args["copy_from"], lake.root)
        print(f"{STAGE}: copied {copied} files from {rt.args['copy_from']} into {lake.root}")
    curated = lake.curated_transactions
    result = {"stage": STAGE, "curated": curated, "converted": False}
    leftovers = storage.list_files(lake.work("curate", "journal"), (".json",))
    if leftovers:
        raise RuntimeError(
            f"{len(leftovers)} curate journal(s) under {lake.work('curate', 'journal')} belong to an earlier curate run "
            "that did not finish: rerun that day's curate with the previous fluxo version first, then upgrade"
        )
    if delta_tables.is_table(spark, curated):
        print(f"{STAGE}: {curated} is already a Delta table; nothing to do")
    elif not storage.exists(curated):
        print(f"{STAGE}: no curated data at {curated}; the first curate run creates the Delta table")
    else:
        before = spark.read.option("basePath", curated).parquet(curated).count()
        spark.sql(f"CONVERT TO DELTA parquet.`{curated}` PARTITIONED BY ({PARTITION_COLUMN} DATE)")
        after = spark.read.format("delta").load(curated).count()
        if after != before:
            raise RuntimeError(f"the converted table holds {after} rows, the Parquet folder held {before}")
        result.update(converted=True, rows=after, version=delta_tables.current_version(spark, curated))
        print(f"{STAGE}: converted {curated} to Delta in place: {after} rows kept")
    staging = lake.work("curate", "staging")
    if storage.delete(staging):
        print(f"{STAGE}: removed the uncommitted staging of earlier curate runs ({staging})")
    write_stats(spark, lake.root, datetime.now(timezone.utc).date().isoformat(), STAGE, result)
    rt.finish()


if __name__ == "__main__":
    run_stage(main)
