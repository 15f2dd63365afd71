"""Standardize: raw source records -> canonical transactions + quarantine.

Two layers, both pure Spark SQL functions:

* a *mapper* per source shape (`map_s3_csv`, `map_s3_jsonl`; api/db/kafka shapes are
  added as more mappers) turns raw lines into *candidate* rows: the raw text of every
  source field under its canonical name, the source's own parse of amount
  (`_amount`) and event time (`_event_ts`), a `_parsed` flag (False = malformed
  line), the original `raw_record` and the lineage (`source`, `batch_id`,
  `ingested_at`, `source_file`);
* `standardize` validates candidates from any mapper against the contract in the
  order of the reason table in docs/source-formats.md (first failing check wins),
  normalises closed sets, tokenizes raw PANs, converts amounts to the reporting
  currency and drops in-batch duplicates (same transaction_id) by the dedupe rule
  in `fluxo.transforms._common.dedupe_order`.

Input lines (`read_lines`) are text: `value`, `source_file`, `ingested_at` (the time
the file landed in raw), so every line is accounted for:
read = staged + quarantined + duplicates_dropped (CSV header lines are not read rows).
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from importlib import resources
from typing import NamedTuple

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fluxo.contract import (
    CHANNEL_SYNONYMS,
    CURRENCIES,
    MAX_FUTURE_SKEW_SECONDS,
    QUARANTINE,
    STATUS_SYNONYMS,
    TRANSACTION,
)
from fluxo.tokenize import PAN_PATTERN, TOKEN_PREFIX
from fluxo.transforms._common import conform, rank_copies

# Columns standardize derives itself; every other contract column comes from the source.
DERIVED = ("source", "amount_reporting", "batch_id", "ingested_at")
SOURCE_FIELDS = tuple(c for c in TRANSACTION.names if c not in DERIVED)
LINE_COLUMNS = ("value", "source_file", "ingested_at")

SAO_PAULO = "America/Sao_Paulo"
TOKEN_PATTERN = r"^tok_[A-Za-z0-9_-]+$"
# Canonical form of a decimal as text (what the BR format normalises to and what JSON carries).
NUMBER_PATTERN = r"^[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$"
BR_NUMBER_PATTERN = r"^[+-]?([0-9]{1,3}(\.[0-9]{3})+|[0-9]+)(,[0-9]+)?$"
BR_DATETIME_PATTERN = r"^[0-9]{2}/[0-9]{2}/[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2}$"
ISO_OFFSET_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
# Any 13-19 digit run in a quarantined raw record is treated as a PAN and masked.
PAN_IN_TEXT = r"(?<![0-9])[0-9]{9,15}([0-9]{4})(?![0-9])"

# s3 CSV: header field -> canonical column, in file order (docs/source-formats.md).
S3_CSV_FIELDS = {
    "id_transacao": "transaction_id",
    "data_hora": "event_ts",
    "cliente": "customer_id",
    "cartao": "card_token",
    "cartao_final": "card_last4",
    "estabelecimento": "merchant_id",
    "mcc": "mcc",
    "valor": "amount",
    "moeda": "currency",
    "pais": "country",
    "canal": "channel",
    "status": "status",
}
S3_CSV_HEADER = ";".join(S3_CSV_FIELDS)
_CSV_FIELD = r'(?:"(?:[^"]|"")*"|[^;"]*)'
S3_CSV_LINE_PATTERN = rf"^{_CSV_FIELD}(?:;{_CSV_FIELD}){{{len(S3_CSV_FIELDS) - 1}}}$"

# s3 JSON lines: canonical column -> JSON path(s); the first non-blank path wins.
S3_JSON_PATHS = {
    "transaction_id": ("$.id",),
    "event_ts": ("$.occurred_at",),
    "customer_id": ("$.customer.id",),
    "card_token": ("$.card.token", "$.card.number"),
    "card_last4": ("$.card.last4",),
    "merchant_id": ("$.merchant.id",),
    "mcc": ("$.merchant.mcc",),
    "amount": ("$.amount.value",),
    "currency": ("$.amount.currency",),
    "country": ("$.merchant.country",),
    "channel": ("$.channel",),
    "status": ("$.status",),
}

CSV_SUFFIXES = (".csv", ".csv.gz")
JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")


class Standardized(NamedTuple):
    staged: DataFrame  # TRANSACTION columns, valid and first copy of each transaction_id
    quarantine: DataFrame  # QUARANTINE columns
    checked: DataFrame  # every read row with `reason` and `_duplicate` (source of the stats)


# --- reading ------------------------------------------------------------------------


def read_lines(spark, files: list[str]) -> DataFrame:
    """Raw files as text lines with the file they came from and when it landed."""
    if not files:
        return spark.createDataFrame([], "value string, source_file string, ingested_at timestamp")
    return spark.read.text(files).select(
        "value",
        F.col("_metadata.file_path").alias("source_file"),
        F.col("_metadata.file_modification_time").alias("ingested_at"),
    )


def load_fx_rates(spark, path: str | None = None) -> DataFrame:
    """FX rates (currency, rate_to_brl); default: the packaged development sample."""
    schema = "currency string, rate_to_brl decimal(20,10)"
    if path:
        return spark.read.csv(path, header=True, schema=schema)
    text = resources.files("fluxo.reference").joinpath("fx_rates.csv").read_text(encoding="utf-8")
    rows = [(r["currency"].strip(), Decimal(r["rate_to_brl"])) for r in csv.DictReader(io.StringIO(text))]
    return spark.createDataFrame(rows, schema)


def reporting_rate(fx_rates: DataFrame, reporting_currency: str) -> Decimal:
    """BRL rate of the reporting currency, after checking every accepted currency has a rate."""
    rates = {r["currency"].upper(): r["rate_to_brl"] for r in fx_rates.collect()}  # reference table: a few rows
    missing = [c for c in (*CURRENCIES, reporting_currency) if not rates.get(c)]
    if missing:
        raise ValueError(f"FX rates missing or zero for {sorted(set(missing))}")
    return Decimal(rates[reporting_currency])


# --- parsing helpers ----------------------------------------------------------------


def _clean_line(value: Column) -> Column:
    return F.regexp_replace(value, "^\ufeff|\r$", "")


def _blank_to_null(c: Column) -> Column:
    trimmed = F.trim(c)
    return F.when(trimmed != "", trimmed)


def strict_decimal(text: Column) -> Column:
    """decimal(18,2) of a plain decimal text, null unless exact to the cent and in range."""
    wide = F.when(text.rlike(NUMBER_PATTERN), text.try_cast("decimal(38,10)"))
    return F.when(wide == F.round(wide, 2), wide.try_cast("decimal(18,2)"))


def parse_br_amount(text: Column) -> Column:
    """Brazilian `1.234,56` / `87,90` / `12000,00` -> decimal(18,2)."""
    plain = F.regexp_replace(F.regexp_replace(text, r"\.", ""), ",", ".")
    return F.when(text.rlike(BR_NUMBER_PATTERN), strict_decimal(plain))


def parse_sao_paulo_datetime(text: Column) -> Column:
    """`dd/mm/yyyy HH:MM:SS` São Paulo wall clock -> UTC instant (null if not a real date)."""
    zoned = F.concat(text, F.lit(f" {SAO_PAULO}"))
    return F.when(text.rlike(BR_DATETIME_PATTERN), F.try_to_timestamp(zoned, F.lit("dd/MM/yyyy HH:mm:ss VV")))


def parse_iso_offset(text: Column) -> Column:
    """ISO-8601 with a mandatory offset (`Z`, `-03:00`, ...) -> UTC instant."""
    return F.when(text.rlike(ISO_OFFSET_PATTERN), text.try_cast("timestamp"))


def _lineage(lines: DataFrame, source: str, default_batch_id: str) -> DataFrame:
    batch = F.regexp_extract("source_file", r"batch=([^/]+)", 1)
    return lines.withColumn("source", F.lit(source)).withColumn(
        "batch_id", F.coalesce(F.when(batch != "", batch), F.lit(default_batch_id))
    )


def _candidates(df: DataFrame, fields: dict[str, Column], amount: Column, event_ts: Column, parsed: Column) -> DataFrame:
    return df.select(
        F.col("raw_record"),
        F.col("source_file"),
        F.col("source"),
        F.col("batch_id"),
        F.col("ingested_at").cast("timestamp").alias("ingested_at"),
        parsed.alias("_parsed"),
        *[fields[c].cast("string").alias(c) for c in SOURCE_FIELDS],
        amount.alias("_amount"),
        event_ts.alias("_event_ts"),
    )


# --- mappers: one per source shape --------------------------------------------------


def map_s3_csv(lines: DataFrame, default_batch_id: str = "") -> DataFrame:
    """s3 partner CSV (`;`, BR numbers, São Paulo dd/mm/yyyy) -> candidates; header lines removed."""
    text = _clean_line(F.col("value"))
    df = _lineage(lines, "s3", default_batch_id).withColumn("raw_record", text)
    df = df.where(F.lower(F.trim("raw_record")) != S3_CSV_HEADER)
    ddl = ", ".join(f"`{name}` string" for name in S3_CSV_FIELDS)
    parsed = F.from_csv(F.col("raw_record"), ddl, {"sep": ";", "quote": '"', "escape": '"', "mode": "PERMISSIVE"})
    fields = {canonical: parsed[source] for source, canonical in S3_CSV_FIELDS.items()}
    amount_text, ts_text = F.trim(fields["amount"]), F.trim(fields["event_ts"])
    return _candidates(
        df,
        fields,
        amount=parse_br_amount(amount_text),
        event_ts=parse_sao_paulo_datetime(ts_text),
        parsed=F.col("raw_record").rlike(S3_CSV_LINE_PATTERN),
    )


def map_s3_jsonl(lines: DataFrame, default_batch_id: str = "") -> DataFrame:
    """s3 gateway JSON lines (nested; amount string or number; ISO-8601 offsets) -> candidates."""
    df = _lineage(lines, "s3", default_batch_id).withColumn("raw_record", _clean_line(F.col("value")))
    doc = F.try_parse_json(F.col("raw_record"))

    def field(paths: tuple[str, ...]) -> Column:
        return F.coalesce(*[_blank_to_null(F.try_variant_get(doc, p, "string")) for p in paths])

    fields = {c: field(paths) for c, paths in S3_JSON_PATHS.items()}
    return _candidates(
        df,
        fields,
        amount=strict_decimal(F.trim(fields["amount"])),
        event_ts=parse_iso_offset(F.trim(fields["event_ts"])),
        parsed=doc.isNotNull() & F.ltrim(F.col("raw_record")).startswith("{"),
    )


def map_s3(csv_lines: DataFrame | None, json_lines: DataFrame | None, default_batch_id: str = "") -> DataFrame | None:
    """Candidates of every s3 file: CSV and JSON lines read separately so each file is scanned once."""
    parts = []
    if csv_lines is not None:
        parts.append(map_s3_csv(csv_lines, default_batch_id))
    if json_lines is not None:
        parts.append(map_s3_jsonl(json_lines, default_batch_id))
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


# --- canonical validation -----------------------------------------------------------


def _lookup(synonyms: dict[str, str], raw: Column) -> Column:
    table = F.create_map(*[F.lit(x) for kv in synonyms.items() for x in kv])
    return F.try_element_at(table, F.lower(F.trim(raw)))


def standardize(
    candidates: DataFrame,
    fx_rates: DataFrame,
    *,
    reporting_currency: str = "BRL",
    token_salt: str,
) -> Standardized:
    """Validate, normalise, tokenize, convert and dedupe candidate rows of any source."""
    rate_out = reporting_rate(fx_rates, reporting_currency)
    c = candidates
    for name in SOURCE_FIELDS:
        c = c.withColumn(name, _blank_to_null(F.col(name)))

    card = F.col("card_token")
    is_pan = card.rlike(PAN_PATTERN)
    fx = F.broadcast(
        fx_rates.select(F.upper(F.trim("currency")).alias("_fx_currency"), F.col("rate_to_brl").alias("_rate_to_brl"))
    )
    c = (
        c.withColumn("_channel", _lookup(CHANNEL_SYNONYMS, F.col("channel")))
        .withColumn("_status", _lookup(STATUS_SYNONYMS, F.col("status")))
        .withColumn("_currency", F.upper(F.col("currency")))
        .withColumn("_country", F.upper(F.col("country")))
        .withColumn(
            "_card_token",
            F.when(is_pan, F.concat(F.lit(TOKEN_PREFIX), F.substring(F.sha2(F.concat(F.lit(token_salt), card), 256), 1, 32)))
            .when(card.rlike(TOKEN_PATTERN), card),
        )
        .withColumn("_card_last4", F.when(is_pan, F.substring(card, -4, 4)).otherwise(F.col("card_last4")))
        .join(fx, F.col("_currency") == F.col("_fx_currency"), "left")
        .withColumn(
            "_amount_reporting",
            F.round(F.col("_amount") * F.col("_rate_to_brl") / F.lit(rate_out).cast("decimal(20,10)"), 2).try_cast(
                "decimal(18,2)"
            ),
        )
    )

    def pattern(column: str) -> str:
        return TRANSACTION.column(column).regex or ".*"

    checks: list[tuple[Column, str]] = [(~F.col("_parsed"), "malformed_record")]
    checks += [(F.col(n).isNull(), f"missing_required:{n}") for n in SOURCE_FIELDS if n in TRANSACTION.required]
    checks += [
        (F.col("_amount").isNull(), "invalid_amount"),
        (F.col("_amount") <= 0, "non_positive_amount"),
        (F.col("_event_ts").isNull(), "invalid_timestamp"),
        (
            F.col("_event_ts") > F.col("ingested_at") + F.make_dt_interval(secs=F.lit(MAX_FUTURE_SKEW_SECONDS)),
            "future_event_ts",
        ),
        (F.col("_channel").isNull(), "invalid_value:channel"),
        (F.col("_status").isNull(), "invalid_value:status"),
        (~F.col("_currency").isin(*CURRENCIES), "invalid_value:currency"),
        (~F.col("_country").rlike(pattern("country")), "invalid_value:country"),
        (~F.col("mcc").rlike(pattern("mcc")), "invalid_value:mcc"),
        (F.col("_card_token").isNull(), "invalid_value:card_token"),
        (~F.coalesce(F.col("_card_last4").rlike(pattern("card_last4")), F.lit(True)), "invalid_value:card_last4"),
        # Only an overflow of decimal(18,2) after conversion is left here.
        (F.col("_amount_reporting").isNull(), "invalid_amount"),
    ]
    reason = F.coalesce(*[F.when(cond, F.lit(code)) for cond, code in checks])

    canonical = {
        "event_ts": F.col("_event_ts"),
        "amount": F.col("_amount"),
        "amount_reporting": F.col("_amount_reporting"),
        "card_token": F.col("_card_token"),
        "card_last4": F.col("_card_last4"),
        "currency": F.col("_currency"),
        "country": F.col("_country"),
        "channel": F.col("_channel"),
        "status": F.col("_status"),
    }
    checked = c.select(
        *[canonical.get(n, F.col(n)).alias(n) for n in TRANSACTION.names],
        reason.alias("reason"),
        F.col("raw_record"),
        F.col("source_file"),
    )
    valid = F.col("reason").isNull()
    checked = rank_copies(checked, partition=[F.col("transaction_id"), valid])
    checked = checked.withColumn("_duplicate", valid & (F.col("_copy_rank") > 1)).drop("_copy_rank")

    staged = conform(checked.where(valid & ~F.col("_duplicate")), TRANSACTION)
    quarantine = conform(
        checked.where(~valid)
        .withColumn("raw_record", F.regexp_replace("raw_record", PAN_IN_TEXT, "<pan ****$1>"))
        .withColumn("quarantined_at", F.current_timestamp()),
        QUARANTINE,
    )
    return Standardized(staged=staged, quarantine=quarantine, checked=checked)


def standardize_stats(checked: DataFrame) -> dict:
    """Counts of one standardize run from the checked rows (one small aggregation)."""
    rows = checked.groupBy("reason", "_duplicate").count().collect()
    by_reason: dict[str, int] = {}
    staged = duplicates = 0
    for r in rows:
        if r["reason"] is not None:
            by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + r["count"]
        elif r["_duplicate"]:
            duplicates += r["count"]
        else:
            staged += r["count"]
    quarantined = sum(by_reason.values())
    return {
        "stage": "standardize",
        "read": staged + quarantined + duplicates,
        "staged": staged,
        "quarantined": quarantined,
        "quarantine_by_reason": dict(sorted(by_reason.items())),
        "duplicates_dropped": duplicates,
    }
