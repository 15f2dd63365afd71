"""Fraud stage: the fraud rules of expectations/fraud_rules.json over the event dates a run touched.

    fraud.py --JOB_NAME fraud --lake_root ROOT --ingest_date YYYY-MM-DD
             [--expectations_root DIR_OR_S3_URI] [--data_docs true] [--run_id ID]
             [--event_dates D1,D2 --curated_version N]

The suite is read and checked first (fluxo.fraud_rules: an unknown rule or a malformed threshold
stops the stage naming the rule, before any data is read). The event dates are the days curate
merged for the ingest date (or --event_dates), read as of the curated version curate committed,
with the earlier days their look-back needs (fluxo.transforms.fraud.look_back_days). Every row
of those dates gets its features; the rows a rule flags are the alerts (FRAUD_ALERT):
MERGEd by Spark into the Delta table Lake.fraud_alerts on (event_date, transaction_id), rule in
fluxo.history, so a rerun replaces and never doubles and an unchanged alert keeps the run that first
raised it. The warehouse load (metrics.fraud_alerts, whole days replaced) reads that table's rows
of those dates, and aggregate reads it for the fraud-flag counts.
The same suite then runs as a GX checkpoint over the features (the report in
quality/ingest_date=D/fraud_validation.json, Data Docs with --data_docs true); its unexpected
count of each rule must equal the Spark flag count. Stats: work/stats/ingest_date=D/fraud.json
(`alerts`, per-rule counts).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

from fluxo import delta_tables, history, storage
from fluxo.contract import FRAUD_ALERT
from fluxo.fraud_rules import load_rules
from fluxo.glue_runtime import curated_input, run_stage, start_stage, write_stats
from fluxo.lake import DATA_DOCS
from fluxo.quality import import_gx_in_background, validate
from fluxo.quality.gate import RESULTS_STORE
from fluxo.quality.suites import EXPECTATIONS_DIR
from fluxo.transforms import fraud
from fluxo.transforms.curate import read_days

STAGE = "fraud"


def main() -> None:
    rt = start_stage(
        ["lake_root", "ingest_date"],
        {"expectations_root": str(EXPECTATIONS_DIR), "data_docs": "true", "run_id": None, "JOB_RUN_ID": None,
         "event_dates": None, "curated_version": None},
    )
    spark, lake, ingest_date = rt.spark, rt.lake, rt.args["ingest_date"]
    rules = load_rules(rt.args["expectations_root"])
    import_gx_in_background()  # the checkpoint runs last; the import overlaps the Spark work
    run_id = rt.args["run_id"] or rt.args["JOB_RUN_ID"] or f"{STAGE}-{ingest_date}"
    detected_at = datetime.now(timezone.utc).replace(microsecond=0)

    seconds, clock = {}, time.perf_counter()
    dates, version = curated_input(rt)
    every_day = fraud.look_back_days(dates, rules)
    rows = read_days(spark, lake.curated_transactions, every_day, version, with_partition=True)
    features = rt.persist(fraud.features(rows, dates, rules))
    alerts = rt.persist(fraud.alerts(features, rules, run_id, detected_at))
    by_rule = fraud.rule_counts(alerts, rules)  # a row a rule flags is an alert: no pass over every row
    alert_count = alerts.count()
    seconds["features"] = time.perf_counter() - clock

    clock = time.perf_counter()
    commit_info = {"stage": STAGE, "ingest_date": ingest_date, "run_id": run_id}
    merged = delta_tables.with_retry(lambda: history.merge_flagged(
        spark, lake.fraud_alerts, alerts, dates, commit_info, FRAUD_ALERT, history.FRAUD_ALERT_FIELDS))
    seconds["delta_merge"] = time.perf_counter() - clock

    # the GX checkpoint of the same suite, for the report and Data Docs
    clock = time.perf_counter()
    run_name = f"fraud ingest_date={ingest_date}"
    if rt.args["data_docs"].lower() == "true":
        with storage.local_copy(lake.quality_root, (DATA_DOCS, RESULTS_STORE)) as quality_dir:
            report = validate(features, [rules.suite], os.path.join(quality_dir, DATA_DOCS), run_name=run_name)
    else:
        report = validate(features, [rules.suite], None, run_name=run_name)
    storage.write_text(f"{lake.quality(ingest_date)}/fraud_validation.json",
                       json.dumps({**report.document(ingest_date), "stage": STAGE}, indent=2, default=str))
    gx_counts = fraud.checkpoint_rule_counts(report.records, report.rows)
    seconds["gx_checkpoint"] = time.perf_counter() - clock
    if gx_counts != by_rule:  # one definition of each threshold: the two readings must agree
        raise RuntimeError(f"fraud: GX counted {gx_counts} unexpected rows per rule, Spark flagged {by_rule}")

    stats = {
        "stage": STAGE,
        "dates": dates,
        "look_back_dates": every_day,
        "curated_version": version,
        "run_id": run_id,
        "rows": report.rows,
        "alerts": alert_count,
        "by_rule": by_rule,
        "rules": {r.name: {"severity": r.severity, "weight": r.weight} for r in rules.rules},
        "delta_version": merged["version"],
        "inserted": merged["inserted"],
        "updated": merged["updated"],
        "deleted": merged["deleted"],
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    print(f"{STAGE} {ingest_date}: {alert_count} alerts over {report.rows} rows of {dates or 'no dates'} "
          f"({', '.join(f'{k}={v}' for k, v in by_rule.items())}); delta version {merged['version']} "
          f"(+{stats['inserted']} ~{stats['updated']} -{stats['deleted']})")
    write_stats(spark, lake.root, ingest_date, STAGE, stats)
    rt.finish()


if __name__ == "__main__":
    run_stage(main)
