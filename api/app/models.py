"""Response models. Metric and outlier rows are derived from fluxo.contract, never restated.

JSON encoding of contract types (documented in api/README.md):
- decimal(p,s) -> JSON string with exactly s decimals ("1234.50"): exact, no
  binary floating point on money; BI tools convert it to a fixed decimal type.
- date -> "YYYY-MM-DD"; timestamp -> ISO 8601 with offset.
- long -> JSON integer; double -> JSON number; string -> JSON string.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema, create_model

from fluxo.contract import DAILY_METRICS, FRAUD_ALERT, METRIC_GRAINS, OUTLIER, OUTLIER_SUMMARY, TRANSACTION, Column, Contract


def _decimal(precision: int, scale: int) -> Any:
    return Annotated[
        Decimal,
        Field(max_digits=precision, decimal_places=scale),
        PlainSerializer(lambda v: f"{v:.{scale}f}", return_type=str, when_used="json"),
        WithJsonSchema(
            {"type": "string", "format": "decimal", "pattern": rf"^-?[0-9]+\.[0-9]{{{scale}}}$"},
            mode="serialization",
        ),
    ]


def python_type(column: Column) -> Any:
    if column.type.startswith("decimal"):
        precision, scale = column.type[column.type.index("(") + 1 : -1].split(",")
        return _decimal(int(precision), int(scale))
    simple = {"string": str, "date": date, "timestamp": datetime, "long": int, "double": float}
    if column.type not in simple:
        raise ValueError(f"contract type {column.type!r} of {column.name} has no API type")
    return simple[column.type]


def model_from_contract(contract: Contract, model_name: str) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for column in contract.columns:
        annotation = python_type(column)
        description = column.description or None
        if column.required:
            fields[column.name] = (annotation, Field(description=description))
        else:
            fields[column.name] = (annotation | None, Field(default=None, description=description))
    return create_model(model_name, __config__=ConfigDict(frozen=True), **fields)


DailyMetric = model_from_contract(DAILY_METRICS, "DailyMetric")
# e.g. merchant_daily -> MerchantDailyMetric
GRAIN_MODELS = {
    grain: model_from_contract(contract, "".join(w.title() for w in grain.split("_")) + "Metric")
    for grain, (contract, _table) in METRIC_GRAINS.items() if grain != "daily"
}
OutlierSummaryRow = model_from_contract(OUTLIER_SUMMARY, "OutlierSummaryRow")
FraudAlert = model_from_contract(FRAUD_ALERT, "FraudAlert")


class FraudEvidence(BaseModel):
    rule: str
    feature: str
    value: Any


class FraudAlertDetail(FraudAlert):
    """An alert with, per rule that fired, the feature it judged and that feature's value."""

    evidence: list[FraudEvidence]


class Token(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    scope: str


OutlierHistoryRow = model_from_contract(OUTLIER, "OutlierHistoryRow")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    version: str
    database: Literal["ok", "unreachable"]


class TableVersion(BaseModel):
    version: int
    timestamp: datetime
    operation: str | None = None


def mask_card(last4: str | None) -> str | None:
    """The card as a person may see it: twelve masking characters and the last four digits."""
    return f"************{last4}" if last4 else None


# The curated transaction, as the API shows it: the card token is withheld, the card masked.
Transaction = create_model(
    "Transaction",
    __base__=model_from_contract(
        Contract(TRANSACTION.name, tuple(c for c in TRANSACTION.columns if c.name not in ("card_token", "card_last4")),
                 TRANSACTION.key),
        "TransactionColumns"),
    event_date=(date, Field(description="UTC day of event_ts (the curated partition)")),
    card_masked=(str | None, Field(default=None, description="Masked card number: only the last four digits show")),
)
