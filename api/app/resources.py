"""Every list resource of the API, once: its path, scope, table, filters and dashboard series.

Each `EntitySet` here gets a REST route with CSV export (app.api.lists), and, when it has a
contract, an OData entity set (app.api.routes.odata). The dashboard draws each `Series`.

The fraud alerts (FRAUD_ALERTS, router app.api.routes.fraud) are one of them: their filters
`rule` and `min_score` are not equalities (app.core.entities.ListHas / AtLeast).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query

from app.core.entities import AtLeast, EntitySet, ListHas, Series
from app.models import GRAIN_MODELS, DailyMetric, FraudAlert, OutlierSummaryRow
from fluxo.contract import CHANNELS, FRAUD_ALERT, FRAUD_RULES, METRIC_GRAINS, OUTLIER_METHODS, OUTLIER_SUMMARY

MCC = Annotated[str | None, Query(pattern=r"^[0-9]{4}$", description="Merchant category code")]


async def merchant_filters(merchant_id: Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00-\x1f]*$")] = None):
    return {"merchant_id": merchant_id}


async def mcc_filters(mcc: MCC = None) -> dict[str, Any]:
    return {"mcc": mcc}


async def country_channel_filters(
    country: Annotated[str | None, Query(pattern=r"^[A-Z]{2}$")] = None, channel: Literal[CHANNELS] | None = None,
) -> dict[str, Any]:
    return {"country": country, "channel": channel}


async def outlier_filters(method: Literal[OUTLIER_METHODS] | None = None, mcc: MCC = None) -> dict[str, Any]:
    return {"method": method, "mcc": mcc}


async def fraud_filters(
    rule: Annotated[Literal[FRAUD_RULES] | None, Query(description="Alerts in which this rule fired")] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1, description="Alerts scoring at least this")] = None,
) -> dict[str, Any]:
    return {"rules": None if rule is None else ListHas(rule), "score": None if min_score is None else AtLeast(min_score)}


async def quality_filters(
    run_id: Annotated[str | None, Query(max_length=250, pattern=r"^[^\x00-\x1f]*$")] = None,
    severity: Literal["critical", "warning"] | None = None,
    success: bool | None = None,
) -> dict[str, Any]:
    return {"run_id": run_id, "severity": severity, "success": success}


async def run_filters(
    state: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z_]+$")] = None,
    dag_id: Annotated[str | None, Query(max_length=250, pattern=r"^[A-Za-z0-9_.-]+$")] = None,
) -> dict[str, Any]:
    return {"state": state, "dag_id": dag_id}


def _grain(grain: str, name: str, path: str, summary: str, filters=None, series=()) -> EntitySet:
    contract, table = METRIC_GRAINS[grain]
    model = DailyMetric if grain == "daily" else GRAIN_MODELS[grain]
    return EntitySet(name, path, "metrics:read", ("metrics", table), summary, contract=contract, filters=filters,
                     paged=grain != "daily", series=series, response_model=model)


METRICS = (
    _grain("daily", "DailyMetrics", "/metrics/daily", "Daily transaction metrics, ordered by day",
           series=(Series("Transactions per day", "transaction_count"),
                   Series("Amount per day", "amount_total", "reporting currency"),
                   Series("Approval rate", "approval_rate", "ratio"),
                   Series("Fraud alerts per day", "fraud_alert_count"))),
    _grain("merchant_daily", "MerchantDailyMetrics", "/metrics/merchants",
           "Metrics per day and merchant, ordered by day and merchant", merchant_filters),
    _grain("mcc_daily", "MccDailyMetrics", "/metrics/mcc",
           "Metrics per day and merchant category code, ordered by day and MCC", mcc_filters),
    _grain("country_channel_daily", "CountryChannelDailyMetrics", "/metrics/country-channel",
           "Metrics per day, merchant country and channel", country_channel_filters),
    _grain("hourly", "HourlyMetrics", "/metrics/hourly", "Metrics per UTC hour, ordered by hour"),
    EntitySet("OutlierSummary", "/metrics/outliers", "metrics:read", ("metrics", "outlier_summary"),
              "Outliers per day, detector and merchant category code", contract=OUTLIER_SUMMARY,
              filters=outlier_filters, series=(Series("Outliers per day", "outlier_count"),),
              response_model=OutlierSummaryRow),
)

QUALITY = EntitySet(
    "QualityResults", "/quality/results", "quality:read", ("quality", "expectation_results"),
    "Expectation results per run, by ingest date", key=("ingest_date", "run_id", "suite", "expectation", "column_name"),
    key_types=("date", "string", "string", "string", "string"), day_column="ingest_date", filters=quality_filters,
    odata=False, tag="quality", cache=False)

RUNS = EntitySet(
    "PipelineRuns", "/runs", "runs:read", ("audit", "pipeline_runs"),
    "Pipeline runs with their per-stage counts, by ingest date (every column of audit.pipeline_runs)",
    key=("ingest_date", "run_id"), key_types=("date", "string"), day_column="ingest_date", filters=run_filters,
    odata=False, tag="runs", cache=False,
    series=(Series("Quarantined per day", "counts.quarantined", per_day="max"),
            Series("Duplicates dropped per day", "counts.duplicates_dropped", per_day="max")))

FRAUD_ALERTS = EntitySet(
    "FraudAlerts", "/fraud/alerts", "fraud:read", ("metrics", "fraud_alerts"),
    "Fraud alerts of the day window with the rules that fired, score and evidence, by day and transaction id",
    contract=FRAUD_ALERT, filters=fraud_filters,
    tag="fraud", cache=False, response_model=FraudAlert)

ENTITY_SETS: tuple[EntitySet, ...] = (*METRICS, QUALITY, RUNS, FRAUD_ALERTS)
ODATA_SETS = {e.name: e for e in ENTITY_SETS if e.odata and e.contract is not None}
