"""The canonical transaction contract and the warehouse metric contracts.

This module is the one definition that drives the Spark schema (Glue scripts),
the Arrow schema (Delta/COPY), the Great Expectations suites, the warehouse
column checks and the API models. It imports nothing heavy at module level so
that the API container and the Glue library zip can both ship it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fluxo.reference import COUNTRY_CODES, CURRENCY_CODES, MCC_CODES
from fluxo.sources import SOURCE_NAMES as SOURCES

CHANNELS = ("pos", "ecommerce", "atm", "mobile", "moto")
STATUSES = ("approved", "declined", "reversed")
# Closed sets from the reference data shipped in fluxo/reference/ (its README says how to update them).
# Every ISO 4217 code is a valid currency; whether a row can be converted is the FX table's
# business (standardize quarantines a currency without a rate as `no_fx_rate:currency`).
CURRENCIES = CURRENCY_CODES
COUNTRIES = COUNTRY_CODES
MCCS = MCC_CODES
DEFAULT_REPORTING_CURRENCY = "BRL"
# event_ts may not be later than ingestion + this tolerance (clock skew).
MAX_FUTURE_SKEW_SECONDS = 300
# Identifiers without a pattern of their own are capped (a 1 MB string in a field is never staged).
MAX_ID_CHARS = 128
# No single card transaction reaches this in the reporting currency: a larger amount is a
# decimal-shift bug in a partner export (the row is quarantined, the day goes on).
MAX_AMOUNT_REPORTING = 1_000_000_000
# The canonical token of a card (fluxo.tokenize.card_token); a raw PAN never matches it.
TOKEN_PATTERN = r"^tok_[A-Za-z0-9_-]+$"

# Synonyms seen in sources, normalised to the closed sets above.
CHANNEL_SYNONYMS = {
    "pos": "pos", "point_of_sale": "pos", "card_present": "pos", "loja": "pos", "presencial": "pos",
    "ecommerce": "ecommerce", "e-commerce": "ecommerce", "online": "ecommerce", "web": "ecommerce",
    "atm": "atm", "caixa_eletronico": "atm",
    "mobile": "mobile", "app": "mobile", "wallet": "mobile",
    # db channel_code (docs/source-formats.md); POS, ATM and MOTO are already above
    "ecom": "ecommerce", "mob": "mobile",
    "moto": "moto", "mail_order": "moto", "telefone": "moto",
}
STATUS_SYNONYMS = {
    "approved": "approved", "aprovada": "approved", "aprovado": "approved", "ok": "approved", "00": "approved",
    "declined": "declined", "negada": "declined", "recusada": "declined", "05": "declined", "51": "declined",
    "reversed": "reversed", "estornada": "reversed", "estorno": "reversed", "chargeback": "reversed",
    "r1": "reversed",  # db status_code
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # "string" | "timestamp" | "decimal(18,2)" | "date" | "long" | "double"
    required: bool = False
    description: str = ""
    allowed: tuple[str, ...] | None = None
    regex: str | None = None
    min_exclusive: float | None = None
    max_inclusive: float | None = None
    max_length: int | None = None


# Standardize's quarantine reason for a row that breaks each kind of row rule (docs/source-formats.md).
# min_exclusive is the contract's "> 0" on amounts.
RULE_REASONS = {
    "required": "missing_required:{column}",
    "closed_set": "invalid_value:{column}",
    "pattern": "invalid_value:{column}",
    "max_length": "invalid_value:{column}",
    "min_exclusive": "non_positive_amount:{column}",
    "max_inclusive": "out_of_range:{column}",
}


@dataclass(frozen=True)
class RowRule:
    """One rule a single row can break, derived from a Column.

    `expectation` names the contract suite's expectation that checks it (its meta.rule; the two
    bounds of a column share one `range:` expectation); `reason` is the quarantine reason
    standardize gives a row that breaks it, so such a row never reaches the quality gate.
    """

    column: str
    kind: str  # a key of RULE_REASONS
    expectation: str
    severity: str  # "critical" | "warning"
    value: object = None  # the set, pattern or bound

    @property
    def reason(self) -> str:
        return RULE_REASONS[self.kind].format(column=self.column)


def column_rules(column: Column) -> list[RowRule]:
    rules = []
    if column.required:
        rules.append(RowRule(column.name, "required", f"required:{column.name}", "critical"))
    if column.allowed is not None:
        rules.append(RowRule(column.name, "closed_set", f"closed_set:{column.name}", "critical", column.allowed))
    if column.regex is not None:
        severity = "critical" if column.required else "warning"  # a bad optional value leaves the row usable
        rules.append(RowRule(column.name, "pattern", f"pattern:{column.name}", severity, column.regex))
    if column.max_length is not None:
        rules.append(RowRule(column.name, "max_length", f"max_length:{column.name}", "critical", column.max_length))
    if column.min_exclusive is not None:
        rules.append(RowRule(column.name, "min_exclusive", f"range:{column.name}", "critical", column.min_exclusive))
    if column.max_inclusive is not None:
        rules.append(RowRule(column.name, "max_inclusive", f"range:{column.name}", "critical", column.max_inclusive))
    return rules


@dataclass(frozen=True)
class Contract:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = field(default=())

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def row_rules(self) -> list[RowRule]:
        """Every rule of a single row, in column order (the suite and standardize both derive from these)."""
        return [rule for column in self.columns for rule in column_rules(column)]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    # --- derived schemas -------------------------------------------------
    def spark_schema(self):
        from pyspark.sql import types as T

        return T.StructType(
            [T.StructField(c.name, _physical(c.type, "spark"), not c.required) for c in self.columns]
        )

    def arrow_schema(self):
        import pyarrow as pa

        return pa.schema([pa.field(c.name, _physical(c.type, "arrow"), nullable=not c.required) for c in self.columns])

    def sql_types(self) -> dict[str, str]:
        """PostgreSQL type of each column (used to check migrations against the contract)."""
        return {c.name: _physical(c.type, "sql") for c in self.columns}


def _physical(contract_type: str, engine: str):
    """The engine's type for a contract type name ("string", "decimal(18,2)", …)."""
    if contract_type.startswith("decimal"):
        precision, scale = (int(x) for x in contract_type[contract_type.index("(") + 1 : -1].split(","))
        if engine == "spark":
            from pyspark.sql import types as T

            return T.DecimalType(precision, scale)
        if engine == "arrow":
            import pyarrow as pa

            return pa.decimal128(precision, scale)
        return "numeric"
    if engine == "sql":
        return {
            "string": "text", "timestamp": "timestamp with time zone", "date": "date",
            "long": "bigint", "double": "double precision",
        }[contract_type]
    if engine == "spark":
        from pyspark.sql import types as T

        return {
            "string": T.StringType(), "timestamp": T.TimestampType(), "date": T.DateType(),
            "long": T.LongType(), "double": T.DoubleType(),
        }[contract_type]
    import pyarrow as pa

    return {
        "string": pa.string(), "timestamp": pa.timestamp("us", tz="UTC"), "date": pa.date32(),
        "long": pa.int64(), "double": pa.float64(),
    }[contract_type]


TRANSACTION = Contract(
    name="transaction",
    key=("transaction_id",),
    columns=(
        Column("transaction_id", "string", True, "Unique after dedupe", max_length=MAX_ID_CHARS),
        Column("source", "string", True, "Where the row was extracted", allowed=SOURCES),
        Column("event_ts", "timestamp", True, "When the transaction happened (UTC)"),
        Column("customer_id", "string", True, "Customer identifier", max_length=MAX_ID_CHARS),
        Column("card_token", "string", True, "Irreversible token of the card; a raw PAN is never stored",
               regex=TOKEN_PATTERN, max_length=MAX_ID_CHARS),
        Column("card_last4", "string", False, "Last four digits of the card", regex=r"^[0-9]{4}$"),
        Column("merchant_id", "string", True, "Merchant identifier", max_length=MAX_ID_CHARS),
        Column("mcc", "string", True, "Merchant category code (ISO 18245, fluxo/reference/mcc.csv)", allowed=MCCS),
        Column("amount", "decimal(18,2)", True, "Amount in the transaction currency", min_exclusive=0),
        Column("currency", "string", True, "ISO 4217 code (fluxo/reference/currencies.csv)", allowed=CURRENCIES),
        Column("amount_reporting", "decimal(18,2)", True, "Amount in the reporting currency", min_exclusive=0,
               max_inclusive=MAX_AMOUNT_REPORTING),
        Column("country", "string", True, "ISO 3166-1 alpha-2 (fluxo/reference/countries.csv)", allowed=COUNTRIES),
        Column("channel", "string", True, "Sales channel", allowed=CHANNELS),
        Column("status", "string", True, "Outcome", allowed=STATUSES),
        Column("batch_id", "string", True, "Lineage: the landing batch"),
        Column("ingested_at", "timestamp", True, "Lineage: when the row was landed (UTC)"),
    ),
)

# Quarantined rows keep the raw record as text plus why and where.
QUARANTINE = Contract(
    name="quarantine",
    columns=(
        Column("source", "string", True),
        Column("batch_id", "string", True),
        Column("source_file", "string", False),
        Column("reason", "string", True),
        Column("raw_record", "string", False),
        Column("quarantined_at", "timestamp", True),
    ),
)

# The fraud-flag measures of every metric grain: how many of the group's transactions the fraud
# stage alerted on (fluxo.contract.FRAUD_ALERT, read by aggregate), and their share.
_FRAUD_MEASURES = (
    Column("fraud_alert_count", "long", True, "Transactions of the group with a fraud alert"),
    Column("fraud_alert_rate", "double", True, "fraud_alert_count / transaction_count"),
)

DAILY_METRICS = Contract(
    name="daily_metrics",
    key=("event_date",),
    columns=(
        Column("event_date", "date", True, "Day of the transactions (UTC)"),
        Column("transaction_count", "long", True),
        Column("amount_total", "decimal(18,2)", True, "Sum of amount_reporting"),
        Column("amount_avg", "decimal(18,2)", True),
        Column("amount_min", "decimal(18,2)", True),
        Column("amount_max", "decimal(18,2)", True),
        Column("approved_count", "long", True),
        Column("declined_count", "long", True),
        Column("reversed_count", "long", True),
        Column("approval_rate", "double", True, "approved / all"),
        Column("distinct_customers", "long", True),
        Column("distinct_merchants", "long", True),
        Column("reporting_currency", "string", True),
        *_FRAUD_MEASURES,
    ),
)


# --- metrics at finer grains ------------------------------------------------------
# Every grain carries event_date, so a rerun of a day swaps all of that day's rows.
# Percentiles are Spark's percentile_approx with PERCENTILE_ACCURACY: the returned
# value's rank is within n / PERCENTILE_ACCURACY of the exact one (exact below that n).
PERCENTILE_ACCURACY = 10_000
PERCENTILES = {"amount_p50": 0.5, "amount_p95": 0.95, "amount_p99": 0.99}


def _grain_measures() -> tuple[Column, ...]:
    return (
        Column("transaction_count", "long", True),
        Column("amount_total", "decimal(18,2)", True, "Sum of amount_reporting"),
        Column("amount_avg", "decimal(18,2)", True, "Mean, rounded half up to cents"),
        Column("amount_min", "decimal(18,2)", True),
        Column("amount_max", "decimal(18,2)", True),
        *(Column(name, "decimal(18,2)", True, f"percentile_approx {p} (accuracy {PERCENTILE_ACCURACY})")
          for name, p in PERCENTILES.items()),
        Column("approved_count", "long", True),
        Column("declined_count", "long", True),
        Column("reversed_count", "long", True),
        Column("approval_rate", "double", True, "approved / all"),
        Column("distinct_customers", "long", True, "Exact count of distinct customer_id"),
        Column("reporting_currency", "string", True),
        *_FRAUD_MEASURES,
    )


def _grain(name: str, keys: tuple[Column, ...]) -> Contract:
    return Contract(name=name, key=tuple(c.name for c in keys), columns=(*keys, *_grain_measures()))


_EVENT_DATE = Column("event_date", "date", True, "Day of the transactions (UTC)")
MERCHANT_DAILY_METRICS = _grain("merchant_daily_metrics", (_EVENT_DATE, Column("merchant_id", "string", True)))
MCC_DAILY_METRICS = _grain("mcc_daily_metrics", (_EVENT_DATE, Column("mcc", "string", True)))
COUNTRY_CHANNEL_DAILY_METRICS = _grain(
    "country_channel_daily_metrics",
    (_EVENT_DATE, Column("country", "string", True), Column("channel", "string", True)),
)
HOURLY_METRICS = _grain(
    "hourly_metrics", (_EVENT_DATE, Column("event_hour", "timestamp", True, "Start of the event hour (UTC)"))
)

# Grain name (its folder under work/metrics/) -> (contract, table in the warehouse schema `metrics`).
METRIC_GRAINS: dict[str, tuple[Contract, str]] = {
    "daily": (DAILY_METRICS, "daily_transactions"),
    "merchant_daily": (MERCHANT_DAILY_METRICS, "merchant_daily"),
    "mcc_daily": (MCC_DAILY_METRICS, "mcc_daily"),
    "country_channel_daily": (COUNTRY_CHANNEL_DAILY_METRICS, "country_channel_daily"),
    "hourly": (HOURLY_METRICS, "hourly_transactions"),
}


# --- outliers ------------------------------------------------------------------------
# The Delta history (fluxo.history) holds one OUTLIER row per (transaction, method) flagged;
# OUTLIER_SUMMARY is its per-day roll-up in the warehouse (metrics.outlier_summary).
OUTLIER_METHODS = ("mad_zscore", "iqr_fence", "customer_history")
_tx = TRANSACTION.column
OUTLIER = Contract(
    name="outlier",
    key=("transaction_id", "method"),
    columns=(
        _tx("transaction_id"),
        _tx("event_ts"),
        Column("event_date", "date", True, "UTC day of event_ts (the table's partition)"),
        _tx("customer_id"),
        _tx("merchant_id"),
        _tx("mcc"),
        _tx("currency"),
        _tx("amount"),
        _tx("amount_reporting"),
        Column("method", "string", True, "Detector that flagged the row", allowed=OUTLIER_METHODS),
        Column("score", "double", True, "The method's score (see fluxo.transforms.outliers)"),
        Column("threshold", "double", True, "The score's limit: |z| cut-off, IQR multiple k, or ratio"),
        Column("baseline", "double", True, "Median amount the row was compared with"),
        Column("scale", "double", True, "Spread used: MAD or IQR of ln(amount); the history size for customer_history"),
        Column("detected_at", "timestamp", True, "When the run that produced this score ran (UTC)"),
        Column("run_id", "string", True, "Run that produced this score"),
    ),
)

OUTLIER_SUMMARY = Contract(
    name="outlier_summary",
    key=("event_date", "method", "mcc"),
    columns=(
        Column("event_date", "date", True),
        Column("method", "string", True, allowed=OUTLIER_METHODS),
        _tx("mcc"),
        Column("outlier_count", "long", True, "Flagged transactions"),
        Column("max_score", "double", True, "Largest |score| of the group"),
        Column("amount_reporting_total", "decimal(18,2)", True, "Sum of amount_reporting of the flagged rows"),
    ),
)


# --- fraud alerts --------------------------------------------------------------------
# The rules of the fraud stage (their thresholds and weights are data: expectations/fraud_rules.json,
# read by fluxo.fraud_rules), and FRAUD_ALERT: one row per transaction at least one rule flagged,
# with every feature as evidence. It is the Delta table Lake.fraud_alerts and the warehouse table
# fraud.alerts alike; features a row has no value for (no history yet, not card present…) are null.
FRAUD_RULES = (
    "velocity_10min", "merchants_1h", "amount_vs_median", "unusual_country", "impossible_travel",
    "card_testing", "duplicate_charge", "night_high_risk_mcc",
)
FRAUD_SEVERITIES = ("critical", "warning")
FRAUD_ALERT = Contract(
    name="fraud_alert",
    key=("event_date", "transaction_id"),
    columns=(
        Column("event_date", "date", True, "UTC day of event_ts (the table's partition)"),
        _tx("transaction_id"),
        _tx("event_ts"),
        _tx("customer_id"),
        _tx("card_token"),
        _tx("merchant_id"),
        _tx("mcc"),
        _tx("country"),
        _tx("channel"),
        _tx("status"),
        _tx("amount"),
        _tx("currency"),
        _tx("amount_reporting"),
        Column("rules", "string", True, "The rules that fired, comma-separated, in alphabetical order"),
        Column("rule_count", "long", True, "How many rules fired"),
        Column("score", "double", True, "1 - product of (1 - weight) over the rules that fired"),
        Column("severity", "string", True, "The highest severity among the rules that fired", allowed=FRAUD_SEVERITIES),
        Column("txns_10min", "long", True, "The card's transactions in [event_ts - 10 min, event_ts], this one included"),
        Column("txns_1h", "long", True, "The card's transactions in [event_ts - 1 h, event_ts]"),
        Column("merchants_10min", "long", True, "Distinct merchants of the card in [event_ts - 10 min, event_ts]"),
        Column("merchants_1h", "long", True, "Distinct merchants of the card in [event_ts - 1 h, event_ts]"),
        Column("customer_history_txns", "long", False, "The customer's transactions in the history window before event_ts"),
        Column("customer_median", "double", False, "Median amount_reporting of those transactions"),
        Column("amount_to_median", "double", False, "amount_reporting / customer_median (with enough history)"),
        Column("card_present_history", "long", False, "The card's card-present transactions in the history window"),
        Column("usual_country", "string", False, "The country of most of them"),
        Column("prior_country_txns", "long", False, "Of them, those in this transaction's country (card present only)"),
        Column("prev_country", "string", False, "Country of the card's previous card-present transaction, if another"),
        Column("travel_minutes", "double", False, "Minutes since that transaction"),
        Column("min_travel_minutes", "double", False, "Minimum travel time between the two countries (reference data)"),
        Column("travel_time_ratio", "double", False, "travel_minutes / min_travel_minutes"),
        Column("small_declines_before", "long", False, "Small declined attempts of the card just before this approval"),
        Column("duplicate_charges", "long", False, "Other approved charges: same card, merchant and amount, shortly before"),
        Column("local_hour", "long", False, "Hour of event_ts in the merchant country's time zone"),
        Column("night_high_risk_amount", "decimal(18,2)", False, "amount_reporting of a high-risk MCC at local night"),
        Column("detected_at", "timestamp", True, "When the run that produced these values ran (UTC)"),
        Column("run_id", "string", True, "Run that produced these values"),
    ),
)
