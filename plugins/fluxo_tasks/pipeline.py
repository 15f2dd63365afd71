"""Steps of `transactions_etl` that run in the Airflow worker, and the stages of the run in one place."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date

from fluxo_platform import lakefs
import fluxo_extract
from fluxo_glue.rerun import CURATED, DAY_HISTORY, RAW
from fluxo.contract import METRIC_GRAINS
from fluxo.sources import REGISTRY
from fluxo.lake import Lake
from fluxo_platform.settings import get_settings
from fluxo_platform.warehouse import replace_days, warehouse_connection

log = logging.getLogger(__name__)
EXTRACT_TASKS = {name: source.extract_task_id for name, source in REGISTRY.items()}


@dataclass(frozen=True)
class GlueStage:
    """One Glue stage of the run: the DAG makes its task, the audit reads its results document.

    `after`: the Glue stages it waits for (none: it starts after extraction); `reads`: the lake
    zones it reads besides their results (`fluxo_glue.rerun`: a rerun skips a stage when none of
    that changed). `rows_in`,
    `rows_out`, `quarantined`: keys of its results document (`stats`) the audit shows as
    the stage's row counts. `retries=0` for a stage that fails the same way again.
    """

    name: str
    after: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    rows_in: str | None = None
    rows_out: str | None = None
    quarantined: str | None = None
    retries: int | None = None

    def task_limits(self, defaults: dict) -> dict:
        """The Glue stages' timeout and retry settings, with this stage's own retries when it has them."""
        return {**defaults, **({"retries": self.retries} if self.retries is not None else {})}


# Adding a stage is one line here plus its glue_scripts/<name>.py. aggregate waits for fraud: it
# counts the alerts per metric grain.
GLUE_STAGES: dict[str, GlueStage] = {stage.name: stage for stage in (
    GlueStage("standardize", (), (RAW,), rows_in="read", rows_out="staged", quarantined="quarantined"),
    GlueStage("quality_gate", ("standardize",), (DAY_HISTORY,), rows_in="rows", rows_out="rows", retries=0),
    GlueStage("curate", ("quality_gate",), (CURATED,), rows_in="staged", rows_out="curated_new"),
    GlueStage("fraud", ("curate",), (CURATED,), rows_in="rows", rows_out="alerts"),
    GlueStage("aggregate", ("curate", "fraud"), (CURATED,), rows_out="metric_rows"),
    GlueStage("outliers", ("curate",), (CURATED,), rows_out="flagged_rows"),
)}
# The fraud stage's results document names its alert count under this key.
FRAUD_STAGE, FRAUD_ALERTS_KEY = "fraud", "alerts"
LOAD_TASKS = ("load_warehouse", "load_outlier_summary", "load_fraud_alerts")
# Every task whose failure fails the run (the audit and the final check read their states).
STAGES = (*EXTRACT_TASKS.values(), *GLUE_STAGES, *LOAD_TASKS)
# Extraction options that make a source start from scratch (full refresh) without touching its state.
_FULL_REFRESH_ARGS = {"kafka": {"replay_from_timestamp": "1970-01-01T00:00:00Z"}}


def timed(step):
    """Add the step's wall time (`duration_s`) to the dict it returns, for the run audit."""

    @functools.wraps(step)
    def run(*args, **kwargs):
        started = time.monotonic()
        result = step(*args, **kwargs)
        return {**result, "duration_s": round(time.monotonic() - started, 3)}

    return run


# --- extraction ----------------------------------------------------------------------------------


def connection_id(source: str) -> str:
    """The Airflow connection a source's extractor reads (its `conn_id`/`aws_conn_id` default)."""
    parameters = inspect.signature(getattr(fluxo_extract, REGISTRY[source].extract_task)).parameters
    return next(parameters[name].default for name in ("conn_id", "aws_conn_id") if name in parameters)


def connection_ids() -> list[str]:
    """Every Airflow connection transactions_etl uses: the warehouse's, then each source's."""
    from fluxo_platform.warehouse import WAREHOUSE_CONN_ID

    return [WAREHOUSE_CONN_ID, *(connection_id(source) for source in REGISTRY)]


def _connection_defined(conn_id: str) -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


def skip_reason(source: str, chosen: list[str] | None, run_type: str = "manual") -> str | None:
    """Why this run does not extract `source` (None: it does)."""
    settings = get_settings()
    if source not in settings.enabled_sources:
        return f"source {source!r} is switched off by FLUXO_SOURCES={settings.sources!r}"
    if chosen is not None and source not in chosen:
        return f"source {source!r} is not among this run's sources {chosen}"
    if run_type == "backfill":
        return (f"backfill: source {source!r} is not extracted; the run reprocesses what was landed for its day "
                "(extraction lands what is new now, which belongs to the current day)")
    conn_id = connection_id(source)
    if not _connection_defined(conn_id):
        return (f"source {source!r} is not configured: the Airflow connection {conn_id!r} is not defined "
                f"(set AIRFLOW_CONN_{conn_id.upper()}, see docs/runbook.md)")
    return None


def forget_progress(source: str) -> None:
    """Full refresh: drop a source's watermark (and the S3 manifest) so it is read from the beginning."""
    with warehouse_connection() as conn, conn.transaction():
        conn.execute("DELETE FROM extract.watermark WHERE source = %s", (source,))
        if source == "s3":
            conn.execute("DELETE FROM extract.s3_object")
    log.warning("full refresh: the extraction progress of %s is forgotten; it is read from the beginning", source)


@timed
def extract(source: str, plan: dict) -> dict:
    """Run the source's extractor (named after its extract task) as the run's plan says, or skip it with the reason."""
    from airflow.sdk.exceptions import AirflowSkipException

    reason = skip_reason(source, plan.get("sources"), plan.get("run_type", "manual"))
    if reason:
        log.warning("skipped: %s", reason)
        raise AirflowSkipException(reason)
    options = dict(plan.get("kafka_replay") or {}) if source == "kafka" else {}
    if plan.get("full_refresh"):
        options = options or _FULL_REFRESH_ARGS.get(source) or {}
        if not options:
            forget_progress(source)
    return getattr(fluxo_extract, REGISTRY[source].extract_task)(plan["ingest_date"], **options)


# --- warehouse loads -----------------------------------------------------------------------------


@timed
def load_metrics(ingest_date: str, run_id: str, conn=None) -> dict:
    """COPY every metric grain of the day (work/metrics/<grain>/) into its warehouse table.

    One transaction for all grains: for each grain, `replace_days` swaps the day
    partitions of the event dates it carries for freshly COPYed ones. A rerun therefore
    replaces whole days (groups that vanished go too) and never duplicates; readers see
    all grains old or all new.
    """
    lake = Lake(get_settings().lake_root)
    tables = {}
    for grain, (contract, _table) in METRIC_GRAINS.items():
        found = lakefs.read_parquet(lake.metrics(grain, ingest_date))
        if found is not None and found.num_rows:
            tables[grain] = found.select(contract.names)
    if not tables:
        log.warning("no metrics for ingest date %s: nothing to load", ingest_date)
        return {"metric_rows": 0, "replaced": 0, "grains": {}, "dates": []}
    grains, replaced = {}, {}
    with (warehouse_connection() if conn is None else nullcontext(conn)) as conn, conn.transaction():
        for grain, rows in tables.items():
            _contract, table = METRIC_GRAINS[grain]
            result = replace_days(conn, "metrics", table, rows, "event_date", {"run_id": run_id})
            grains[grain], replaced[grain] = result["copied"], result["replaced"]
    log.info("loaded metrics for %s: %s (replaced %s)", ingest_date, json.dumps(grains), json.dumps(replaced))
    dates = sorted({str(d) for d in tables["daily"].column("event_date").to_pylist()}) if "daily" in tables else []
    return {"metric_rows": grains.get("daily", 0), "replaced": replaced.get("daily", 0), "grains": grains,
            "dates": dates}


def load_day_results(stage: str, name: str, contract, ingest_date: str, run_id: str,
                     result: dict | None = None, read_rows=None) -> dict:
    """COPY the stage's rows of the day into metrics.<name>, replacing whole event dates.

    `result` is the stage task's XCom (its stats say which event dates it recomputed); without it
    the stage's results document for the ingest date is read. The rows are
    work/metrics/<name>/ingest_date=D, or `read_rows(lake, dates)` (an Arrow table of `contract`).
    Each event date the stage recomputed (the `dates` of its stats) is replaced as a whole, in one
    transaction: a group that vanished disappears (a day left empty is emptied), and a rerun never
    duplicates.
    """
    lake = Lake(get_settings().lake_root)
    stats = (result or {}).get("stats") or lakefs.read_json(lake.stats(ingest_date, stage))
    if stats is None:
        raise FileNotFoundError(f"no {stage} stats for ingest date {ingest_date}: run the {stage} stage first")
    dates = [date.fromisoformat(d) for d in stats.get("dates", [])]
    rows = read_rows(lake, dates) if read_rows else lakefs.read_parquet(lake.metrics(name, ingest_date))
    rows = contract.arrow_schema().empty_table() if rows is None else rows.select(contract.names)
    extra = {} if "run_id" in contract.names else {"run_id": run_id}  # alerts carry the run that scored them
    with warehouse_connection() as conn:
        result = replace_days(conn, "metrics", name, rows, "event_date", extra, days=dates)
    log.info("loaded %d %s rows for %s (event dates %s, %d replaced)",
             result["copied"], name, ingest_date, stats.get("dates"), result["replaced"])
    return {"rows": result["copied"], "replaced": result["replaced"], "dates": stats.get("dates", [])}
