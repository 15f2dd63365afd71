"""Daily transactions ETL: extract 4 sources -> standardize -> quality gate -> curate -> aggregate + outliers -> warehouse -> audit.

Runs on a daily schedule, or by hand with a `run_date`. Each Glue stage runs locally
or on AWS Glue depending on FLUXO_GLUE_MODE; this file is the same in both worlds.
Sources not listed in FLUXO_SOURCES are skipped.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, TaskGroup, chain, dag, get_current_context, task
from fluxo_glue import FluxoGlueJobOperator
from fluxo_tasks import outliers, pipeline

from fluxo.sources import REGISTRY


@dag(
    dag_id="transactions_etl",
    schedule="@daily",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=2)},
    params={"run_date": Param("", type="string", description="Day to process (YYYY-MM-DD); empty = logical date")},
    tags=["fluxo", "transactions"],
    doc_md=__doc__,
)
def transactions_etl():
    @task
    def resolve_run_date(**context) -> str:
        return pipeline.resolve_ingest_date(context["params"], context.get("logical_date"), context["dag_run"].run_after)

    # one run of an extractor at a time: each one moves its source's watermark
    @task(max_active_tis_per_dag=1)
    def extract_source(source: str, ingest_date: str) -> dict:
        return pipeline.extract(source, ingest_date)

    @task(retries=0)
    def load_warehouse(ingest_date: str, **context) -> dict:
        return pipeline.load_metrics(ingest_date, context["run_id"])

    @task(retries=0)
    def load_outlier_summary(ingest_date: str, **context) -> dict:
        return outliers.load_outlier_summary(ingest_date, context["run_id"], context["ti"].xcom_pull(task_ids="outliers"))

    @task(trigger_rule="all_done", retries=0)
    def record_audit(ingest_date: str) -> dict:
        return pipeline.record_run(get_current_context(), ingest_date)

    @task(trigger_rule="one_failed", retries=0)
    def fail_run_if_a_stage_failed() -> None:
        """record_audit always runs and succeeds, so without this leaf a failed stage would end as a successful run."""
        raise RuntimeError("a stage of transactions_etl failed: see that task's log and audit.pipeline_runs")

    ingest_date = resolve_run_date()
    with TaskGroup("extract") as extract:
        extracted = [
            extract_source.override(task_id=source.extract_task)(name, ingest_date) for name, source in REGISTRY.items()
        ]
    day = {"--ingest_date": ingest_date}
    standardize = FluxoGlueJobOperator(
        task_id="standardize", script="standardize", script_args=day, trigger_rule="none_failed_min_one_success",
    )
    quality_gate = FluxoGlueJobOperator(task_id="quality_gate", script="quality_gate", script_args=day, retries=0)
    curate = FluxoGlueJobOperator(task_id="curate", script="curate", script_args=day, max_active_tis_per_dag=1)
    aggregate = FluxoGlueJobOperator(task_id="aggregate", script="aggregate", script_args=day)
    find_outliers = FluxoGlueJobOperator(task_id="outliers", script="outliers", script_args=day)
    metrics_loaded = load_warehouse(ingest_date)
    outliers_loaded = load_outlier_summary(ingest_date)
    audit = record_audit(ingest_date)

    chain(extract, standardize, quality_gate, curate, [aggregate, find_outliers], [metrics_loaded, outliers_loaded], audit)
    [*extracted, standardize, quality_gate, curate, aggregate, find_outliers, metrics_loaded, outliers_loaded] >> fail_run_if_a_stage_failed()


transactions_etl()
