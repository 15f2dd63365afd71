"""Daily transactions ETL: extract 4 sources -> standardize -> quality gate -> curate -> fraud + outliers -> aggregate -> warehouse -> audit.

Runs on a daily schedule, or by hand from the trigger form (run date, sources, full refresh).
One run processes at a time, whatever its type; each Glue stage runs locally or on AWS Glue
depending on FLUXO_GLUE_MODE, and this file is the same in both worlds. A failed run and a run
past its deadline alert through the webhook; docs/runbook.md says what to do.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import PokeReturnValue, TaskGroup, chain, dag, get_current_context, task
from fluxo_alerts import RunFailureNotifier, WebhookNotifier
from fluxo_alerts.checks import check_volume
from fluxo_glue import FluxoGlueJobOperator
from fluxo_tasks import assets, audit, fraud, outliers, pipeline, run

from fluxo.sources import REGISTRY

LIMITS = run.limits()


@dag(
    dag_id="transactions_etl",
    schedule="@daily",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=run.run_timeout(),
    params=run.PARAMS,
    default_args={"on_failure_callback": run.remember_error},
    on_failure_callback=RunFailureNotifier(),
    deadline=run.deadline_alerts(
        WebhookNotifier, event="deadline_missed", title="transactions_etl is late",
        text="run {{ dag_run.dag_run_id }} had not finished by its deadline {{ deadline.deadline_time }}",
    ),
    tags=["fluxo", "transactions"],
    doc_md=__doc__,
)
def transactions_etl():
    @task(multiple_outputs=True, **LIMITS["plan"])
    def plan_run(**context) -> dict:
        return run.plan(context["params"], context["dag_run"])

    @task.sensor(poke_interval=30, timeout=run.run_timeout().total_seconds(), mode="reschedule", retries=0)
    def wait_for_run_slot(**context) -> PokeReturnValue:
        holder = run.claim_run_slot(context["dag"].dag_id, context["run_id"])
        return PokeReturnValue(is_done=holder is None)

    # one run of an extractor at a time: each one moves its source's watermark
    @task(max_active_tis_per_dag=1, **LIMITS["extract"])
    def extract_source(source: str, plan: dict) -> dict:
        return pipeline.extract(source, plan)

    @task(outlets=assets.OUTLETS["load_warehouse"], **LIMITS["load"])
    def load_warehouse(ingest_date: str, **context) -> dict:
        loaded = pipeline.load_metrics(ingest_date, context["run_id"])
        assets.annotate(context, "load_warehouse", ingest_date, loaded["dates"])
        return loaded

    @task(outlets=assets.OUTLETS["load_outlier_summary"], **LIMITS["load"])
    def load_outlier_summary(ingest_date: str, **context) -> dict:
        loaded = outliers.load_outlier_summary(ingest_date, context["run_id"], context["ti"].xcom_pull(task_ids="outliers"))
        assets.annotate(context, "load_outlier_summary", ingest_date, loaded["dates"])
        return loaded

    @task(outlets=assets.OUTLETS["load_fraud_alerts"], **LIMITS["load"])
    def load_fraud_alerts(ingest_date: str, **context) -> dict:
        loaded = fraud.load_fraud_alerts(ingest_date, context["run_id"], context["ti"].xcom_pull(task_ids="fraud"))
        assets.annotate(context, "load_fraud_alerts", ingest_date, loaded["dates"])
        return loaded

    # a day with no records at all warns and skips the later stages (nothing to judge or curate); a day
    # whose records were all quarantined goes on to the quality gate, which stops it naming the source
    @task.short_circuit(ignore_downstream_trigger_rules=False, **LIMITS["check"])
    def check_day_volume(ingest_date: str, **context) -> bool:
        return check_volume(ingest_date, context["ti"].xcom_pull(task_ids="standardize"), context)["read"] > 0

    @task(trigger_rule="all_done", **LIMITS["check"])
    def record_audit() -> dict:
        return audit.record_run(get_current_context())

    @task(trigger_rule="all_done", retries=0)
    def fail_run_if_a_stage_failed(**context) -> None:
        """record_audit always runs, so without this leaf a failed stage would end as a successful run."""
        audit.raise_if_failed(context["ti"].xcom_pull(task_ids="record_audit"))

    plan = plan_run()
    slot = wait_for_run_slot()
    day = plan["ingest_date"]
    with TaskGroup("extract") as extract:
        for name, source in REGISTRY.items():
            extract_source.override(task_id=source.extract_task)(name, plan)
    glue = {
        stage.name: FluxoGlueJobOperator(
            task_id=stage.name, script=stage.name, script_args={"--ingest_date": day},
            upstream_stages=stage.after, reads=stage.reads,
            outlets=assets.OUTLETS.get(stage.name, []), max_active_tis_per_dag=1,
            # extraction may skip every source (a backfill, a reprocess): the first stage runs on what was landed
            trigger_rule="all_success" if stage.after else "none_failed",
            **stage.task_limits(LIMITS["glue"]),
        )
        for stage in pipeline.GLUE_STAGES.values()
    }
    metrics_loaded, outliers_loaded, volume = load_warehouse(day), load_outlier_summary(day), check_day_volume(day)
    alerts_loaded = load_fraud_alerts(day)
    audited = record_audit()

    chain(plan, slot, extract, glue["standardize"], volume, glue["quality_gate"])
    for stage in pipeline.GLUE_STAGES.values():
        for upstream in stage.after:
            glue[upstream] >> glue[stage.name]
    glue["aggregate"] >> metrics_loaded
    glue["outliers"] >> outliers_loaded
    glue["fraud"] >> alerts_loaded
    # (not after the volume check itself: its short circuit would skip the audit too; the stages after it wait for it)
    [*glue.values(), metrics_loaded, outliers_loaded, alerts_loaded] >> audited >> fail_run_if_a_stage_failed()


transactions_etl()
