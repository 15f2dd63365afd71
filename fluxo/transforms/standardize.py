"""Standardize: raw source records -> canonical transactions + quarantine.

Two layers, both pure Spark SQL functions (no Python UDFs):

* a *mapper* per source shape turns raw text into *candidate* rows: the raw text of
  every source field under its canonical name, the source's own parse of amount
  (`_amount`) and event time (`_event_ts`), a mapper-level `_defect` (null = the
  record could be read; else its reason code), the Kafka `_event_id` (null for
  other sources), the original `raw_record` and the lineage (`source`, `batch_id`,
  `ingested_at`, `source_file`). Shapes (docs/source-formats.md):
  - s3 CSV (`*.csv[.gz]`): `map_s3_csv` — delimiter `;` or `,` and column order read
    from each file's header (names matched case/space-insensitively through
    `S3_CSV_ALIASES`); a file without a header uses the documented layout;
  - s3 JSON (`*.jsonl[.gz]` one object per line; `*.json[.gz]` a JSON array, one
    object, or JSON lines): `map_s3_jsonl` / `map_s3_json_documents`;
  - api pages (`page-*.json`): `map_api_pages`;
  - db COPY files (`part-*.csv`): `map_db_csv`, over records read by Spark's CSV reader
    (`read_csv_records`: a quoted value may hold line breaks, so never line by line);
  - kafka envelopes (`*.jsonl`): `map_kafka`;
* `standardize` validates candidates from any mapper against every row rule of the contract
  (`TRANSACTION.row_rules()`, the rules the contract expectation suite is generated from) in the
  order of the reason table in docs/source-formats.md (first failing check wins), normalises
  closed sets, tokenizes raw PANs, quarantines card numbers in identifiers, converts amounts to
  the reporting currency and drops in-batch duplicates (same transaction_id; for Kafka also the
  same event_id) by the dedupe rule in `fluxo.transforms._common.dedupe_order`. Every card
  number in a quarantined record is masked (`fluxo.tokenize.mask_pans_sql`).

Input text (`read_lines`, `read_documents`): `value`, `source_file`, `ingested_at`
(the time the file landed in raw). Every record is accounted for:
read = staged + quarantined + duplicates_in_batch (CSV header lines and API page
envelopes are not records).

Encoding: a line (or JSON document) that is not valid UTF-8 is decoded as latin-1.
The decision is per line, which costs no extra pass: ASCII reads the same in both,
and latin-1 text only forms valid UTF-8 when an accented capital is followed by a
C1 control or a symbol in 0x80-0xBF (e.g. "Ã©"), which Brazilian exports do not contain.
A UTF-8 byte order mark is dropped.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Callable, NamedTuple

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from fluxo.contract import (
    CHANNEL_SYNONYMS,
    CURRENCIES,
    MAX_FUTURE_SKEW_SECONDS,
    QUARANTINE,
    STATUS_SYNONYMS,
    TRANSACTION,
    RowRule,
)
from fluxo.reference import fx_rates as packaged_fx_rates
from fluxo.sources import REGISTRY
from fluxo.tokenize import PAN_PATTERN, TOKEN_PREFIX, has_pan_sql, mask_pans_sql
from fluxo.transforms._common import conform, rank_copies

# Columns standardize derives itself; every other contract column comes from the source.
DERIVED = ("source", "amount_reporting", "batch_id", "ingested_at")
SOURCE_FIELDS = tuple(c for c in TRANSACTION.names if c not in DERIVED)
LINE_COLUMNS = ("value", "source_file", "ingested_at")
# Free-text identifiers that reach curated data: one holding a card number is quarantined (pan_in_field).
PAN_CHECKED_COLUMNS = ("transaction_id", "customer_id", "merchant_id")
# The order in which the contract's value rules are checked (first failing wins; docs/source-formats.md).
VALUE_CHECK_ORDER = ("channel", "status", "currency", "country", "mcc", "transaction_id", "customer_id",
                     "merchant_id", "card_token", "card_last4")

SAO_PAULO = "America/Sao_Paulo"
# Canonical form of a decimal as text (what the BR format normalises to and what JSON carries).
NUMBER_PATTERN = r"^[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$"
DECIMAL_18_2_PATTERN = r"^[+-]?[0-9]{1,16}(\.[0-9]{1,2})?$"  # plain decimal text that fits decimal(18,2) as written
BR_NUMBER_PATTERN = r"^[+-]?([0-9]{1,3}(\.[0-9]{3})+|[0-9]+)(,[0-9]+)?$"
CENTS_PATTERN = r"^[+-]?[0-9]{1,18}$"
BR_DATETIME_PATTERN = r"^[0-9]{2}/[0-9]{2}/[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2}$"
# ISO-8601 with a mandatory offset; PostgreSQL's text form (space, `-03`) is accepted too.
ISO_OFFSET_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}(:?[0-9]{2})?)$"
)

# s3 CSV: header field -> canonical column, in the documented file order (docs/source-formats.md).
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
# Other header spellings seen in partner exports (after lower-casing, trimming and
# turning spaces/hyphens into `_`); the canonical column names are accepted too.
S3_CSV_ALIASES = {
    **S3_CSV_FIELDS,
    **{c: c for c in SOURCE_FIELDS},
    "id": "transaction_id", "id_transação": "transaction_id", "transacao": "transaction_id",
    "data": "event_ts", "datahora": "event_ts", "data_hora_transacao": "event_ts",
    "cliente_id": "customer_id", "id_cliente": "customer_id", "customer": "customer_id",
    "cartão": "card_token", "card": "card_token", "token_cartao": "card_token",
    "cartão_final": "card_last4", "final_cartao": "card_last4", "last4": "card_last4",
    "estabelecimento_id": "merchant_id", "id_estabelecimento": "merchant_id", "merchant": "merchant_id",
    "valor_transacao": "amount", "país": "country", "canal_venda": "channel", "situacao": "status",
    "situação": "status",
}
# db COPY files: header field -> canonical column; `id` and `updated_at` are read and ignored.
DB_CSV_FIELDS = {
    "id": None,
    "txn_uuid": "transaction_id",
    "customer_id": "customer_id",
    "card_token": "card_token",
    "card_last4": "card_last4",
    "merchant_id": "merchant_id",
    "mcc": "mcc",
    "amount_cents": "amount",
    "currency": "currency",
    "country": "country",
    "channel_code": "channel",
    "status_code": "status",
    "created_at": "event_ts",
    "updated_at": None,
}
DB_CSV_HEADER = ",".join(DB_CSV_FIELDS)
DB_CSV_ALIASES = {**DB_CSV_FIELDS, "transaction_id": "transaction_id"}
IGNORED = "_ignored"

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
# api record (also the kafka payload).
API_PATHS = {
    "transaction_id": ("$.transaction_id",),
    "event_ts": ("$.created_at",),
    "customer_id": ("$.customer_id",),
    "card_token": ("$.card.token", "$.card.number"),
    "card_last4": ("$.card.last4",),
    "merchant_id": ("$.merchant_id",),
    "mcc": ("$.mcc",),
    "amount": ("$.amount",),
    "currency": ("$.currency",),
    "country": ("$.country",),
    "channel": ("$.channel",),
    "status": ("$.status",),
}


class Standardized(NamedTuple):
    staged: DataFrame  # TRANSACTION columns, valid and first copy of each transaction_id
    quarantine: DataFrame  # QUARANTINE columns
    checked: DataFrame  # every read row with `reason` and `_duplicate` (source of the stats)


# --- reading ------------------------------------------------------------------------


def _empty_lines(spark) -> DataFrame:
    return spark.createDataFrame([], "value string, source_file string, ingested_at timestamp")


def _read_text(spark, files: list[str], whole: bool) -> DataFrame:
    if not files:
        return _empty_lines(spark)
    return (
        spark.read.text(files, wholetext=whole)
        .select(
            "value",
            F.col("_metadata.file_path").alias("source_file"),
            F.col("_metadata.file_modification_time").alias("ingested_at"),
        )
    )


def read_lines(spark, files: list[str]) -> DataFrame:
    """Raw files as text lines with the file they came from and when it landed (gzip is transparent)."""
    return _read_text(spark, files, whole=False)


def read_documents(spark, files: list[str]) -> DataFrame:
    """Raw files as one text row each (JSON documents: arrays, API pages)."""
    return _read_text(spark, files, whole=True)


def read_csv_records(spark, files: list[str], width: int) -> DataFrame:
    """Raw CSV files (PostgreSQL `COPY ... CSV`: `,`, `"` quoting, `""` inside quotes, `\\n` between
    records) as logical records, parsed by Spark's CSV reader: a quoted field may hold line
    breaks, delimiters and quotes. Header lines are records too (the mapper recognises them).

    `_fields` holds the record's `width` fields as text, or null when the record does not have
    `width` fields (or cannot be parsed); `value` is the whole record as text: Spark's own text
    of a record it could not parse, else the record rendered back as CSV from its fields (same
    fields, quoting only where needed, NULL and '' both empty)."""
    if not files:
        return _empty_lines(spark).withColumn("_fields", F.lit(None).cast("array<string>"))
    names = [f"_c{i}" for i in range(width)]
    records = (
        spark.read.schema(", ".join(f"{n} string" for n in names) + ", _corrupt_record string")
        .options(header=False, multiLine=True, lineSep="\n", quote='"', escape='"', mode="PERMISSIVE",
                 columnNameOfCorruptRecord="_corrupt_record")
        .csv(files)
    )
    parsed = F.col("_corrupt_record").isNull()
    return records.select(
        F.coalesce(F.col("_corrupt_record"), F.to_csv(F.struct(*names), {"quote": '"', "escape": '"'})).alias("value"),
        F.col("_metadata.file_path").alias("source_file"),
        F.col("_metadata.file_modification_time").alias("ingested_at"),
        F.when(parsed, F.array(*names)).alias("_fields"),
    )


def load_fx_rates(spark, path: str | None = None) -> DataFrame:
    """FX rates (currency, rate_to_brl); default: the packaged development sample."""
    schema = "currency string, rate_to_brl decimal(20,10)"
    if path:
        return spark.read.csv(path, header=True, schema=schema)
    return spark.createDataFrame(sorted(packaged_fx_rates().items()), schema)


def reporting_rate(fx_rates: DataFrame, reporting_currency: str) -> Decimal:
    """BRL rate of the reporting currency, after checking the table itself (a configuration error
    stops the stage; a row in an ISO 4217 currency the table lacks is quarantined, `no_fx_rate:currency`)."""
    rates = {(r["currency"] or "").strip().upper(): r["rate_to_brl"] for r in fx_rates.collect()}  # a few rows
    not_iso = sorted(set(rates) - set(CURRENCIES))
    if not_iso:
        raise ValueError(f"FX rates for codes that are not ISO 4217 currencies: {not_iso}")
    missing = sorted(c for c in {*rates, reporting_currency} if not rates.get(c) or rates[c] <= 0)
    if missing:
        raise ValueError(f"FX rates missing or zero for {missing}")
    return Decimal(rates[reporting_currency])


# --- parsing helpers ----------------------------------------------------------------


def decode_text(value: Column) -> Column:
    """UTF-8 text as is; text that is not valid UTF-8 decoded as latin-1 (Spark keeps the raw bytes)."""
    return F.when(F.is_valid_utf8(value), value).otherwise(F.decode(value.cast("binary"), "ISO-8859-1"))


def _clean_line(value: Column) -> Column:
    text = decode_text(value)
    # The regexp only where it can match: a scan for `\r` is a fraction of its cost on every line.
    return F.when(text.contains("\r") | text.startswith("\ufeff"), F.regexp_replace(text, "^\ufeff|\r$", "")).otherwise(text)


def _blank_to_null(c: Column) -> Column:
    trimmed = F.trim(c)
    return F.when(trimmed != "", trimmed)


def strict_decimal(text: Column) -> Column:
    """decimal(18,2) of a plain decimal text, null unless exact to the cent and in range."""
    wide = F.when(text.rlike(NUMBER_PATTERN), text.try_cast("decimal(38,10)"))
    exact = F.when(wide == F.round(wide, 2), wide.try_cast("decimal(18,2)"))
    # Most amounts have at most two decimals and fit: cast them directly (same value); the
    # decimal(38,10) arithmetic above is a third of a CSV mapper's time at 1M rows.
    return F.when(text.rlike(DECIMAL_18_2_PATTERN), text.try_cast("decimal(18,2)")).otherwise(exact)


def parse_br_amount(text: Column) -> Column:
    """Brazilian `1.234,56` / `87,90` / `12000,00` -> decimal(18,2)."""
    plain = F.translate(text, ",.", ".")  # `,` -> `.`, `.` dropped
    return F.when(text.rlike(BR_NUMBER_PATTERN), strict_decimal(plain))


def parse_cents(text: Column) -> Column:
    """Integer minor units (`12345`) -> decimal(18,2) (`123.45`)."""
    return F.when(text.rlike(CENTS_PATTERN), (text.try_cast("decimal(20,0)") / 100).try_cast("decimal(18,2)"))


def parse_sao_paulo_datetime(text: Column) -> Column:
    """`dd/mm/yyyy HH:MM:SS` São Paulo wall clock -> UTC instant (null if not a real date).

    The wall clock is parsed in the session's zone (UTC in every fluxo session) and shifted from
    São Paulo's: the zone is resolved once per query, not per row as a `VV` field in the pattern
    was, with the same instants (a timestamp every 7 minutes of 1985-2030
    compared, DST gaps and overlaps included)."""
    wall_clock = F.try_to_timestamp(text, F.lit("dd/MM/yyyy HH:mm:ss"))
    return F.when(text.rlike(BR_DATETIME_PATTERN), F.to_utc_timestamp(wall_clock, SAO_PAULO))


def parse_iso_offset(text: Column) -> Column:
    """ISO-8601 with a mandatory offset (`Z`, `-03:00`, `-03`, ...) -> UTC instant."""
    return F.when(text.rlike(ISO_OFFSET_PATTERN), text.try_cast("timestamp"))


def _lineage(lines: DataFrame, source: str, default_batch_id: str) -> DataFrame:
    batch = F.regexp_extract("source_file", r"batch=([^/]+)", 1)
    return lines.withColumn("source", F.lit(source)).withColumn(
        "batch_id", F.coalesce(F.when(batch != "", batch), F.lit(default_batch_id))
    )


def _candidates(
    df: DataFrame,
    fields: dict[str, Column],
    amount: Column,
    event_ts: Column,
    defect: Column,
    event_id: Column | None = None,
) -> DataFrame:
    return df.select(
        F.col("raw_record"),
        F.col("source_file"),
        F.col("source"),
        F.col("batch_id"),
        F.col("ingested_at").cast("timestamp").alias("ingested_at"),
        defect.cast("string").alias("_defect"),
        (event_id if event_id is not None else F.lit(None)).cast("string").alias("_event_id"),
        *[fields[c].cast("string").alias(c) for c in SOURCE_FIELDS],
        amount.alias("_amount"),
        event_ts.alias("_event_ts"),
    )


def _malformed_unless(ok: Column) -> Column:
    return F.when(~F.coalesce(ok, F.lit(False)), F.lit("malformed_record"))


# --- CSV with a header row ----------------------------------------------------------


def _csv_field(sep: str) -> str:
    # Possessive quantifiers: no backtracking (and no deep recursion) on huge fields.
    return rf'(?:"[^"]*+(?:""[^"]*+)*+"|[^{sep}"]*+)'


def _csv_line_pattern(sep: str) -> str:
    return rf"^{_csv_field(sep)}(?:{sep}{_csv_field(sep)})*+$"


def _csv_fields(line: Column, sep: str) -> Column:
    """The fields of a well-formed CSV line, unquoted (`""` inside quotes is one `"`)."""
    # Each match starts at a separator (one is put in front), so no match is empty.
    raw = F.regexp_extract_all(F.concat(F.lit(sep), line), F.lit(rf"{sep}({_csv_field(sep)})"), F.lit(1))
    unquoted = F.transform(
        raw,
        lambda f: F.when(
            f.startswith('"'), F.replace(F.substring(f, F.lit(2), F.length(f) - 2), F.lit('""'), F.lit('"'))
        ).otherwise(f),
    )
    # Most lines quote nothing: their fields are a plain split (the same fields, a third of the cost).
    return F.when(line.contains('"'), unquoted).otherwise(F.split(line, re.escape(sep), -1))


def _csv_well_formed(line: Column, sep: str) -> Column:
    """Whether the line is a sequence of CSV fields (any line without a quote is)."""
    return ~line.contains('"') | line.rlike(_csv_line_pattern(sep))


def _header_names(text: Column) -> Column:
    """Normalised column names of a header line (its delimiter: `;` if present, else `,`)."""
    sep = F.when(text.contains(";"), F.lit(";")).otherwise(F.lit(","))
    return F.transform(
        F.split(text, sep),
        lambda n: F.regexp_replace(F.lower(F.trim(F.regexp_replace(n, '"', ""))), r"[\s-]+", "_"),
    )


def _alias_map(aliases: dict[str, str | None]) -> Column:
    return F.create_map(*[F.lit(x) for k, v in aliases.items() for x in (k, v or IGNORED)])


def _is_header(text: Column, aliases: dict[str, str | None]) -> Column:
    """A line naming the source's transaction id column with identifier-like names only."""
    id_names = [k for k, v in aliases.items() if v == "transaction_id"]
    names = _header_names(text)
    # Cheap scans first: a header holds only the characters its names may be written with (a data
    # row fails at its first `/`, `:` or `.`), and only lines mentioning an id column name are split.
    only_name_characters = text.rlike(r'^[\p{L}0-9_\s";,-]*+$')
    mentions = "|".join(re.escape(n).replace("_", r"[_\s-]") for n in id_names)
    return only_name_characters & F.lower(text).rlike(mentions) & (
        F.exists(names, lambda n: n.isin(*id_names)) & F.forall(names, lambda n: n.rlike(r"^[\p{L}_][\p{L}0-9_]*$"))
    )


def _header_layout(header: Column, aliases: dict[str, str | None]) -> list[Column]:
    """Per-file layout columns: `_sep`, `_ncols`, `_unknown` and `_pos_<column>` (1-based, 0 = absent)."""
    mapped = F.transform(_header_names(header), lambda n: F.coalesce(F.try_element_at(_alias_map(aliases), n), F.lit("?")))
    return [
        F.when(header.contains(";"), F.lit(";")).otherwise(F.lit(",")).alias("_sep"),
        F.size(mapped).alias("_ncols"),
        F.array_contains(mapped, "?").alias("_unknown"),
        *[F.array_position(mapped, c).cast("int").alias(f"_pos_{c}") for c in SOURCE_FIELDS],
    ]


def _map_csv(
    lines: DataFrame,
    source: str,
    aliases: dict[str, str | None],
    default_header: str,
    default_batch_id: str,
    parse_amount: Callable[[Column], Column],
    parse_event_ts: Callable[[Column], Column],
) -> DataFrame:
    """Candidates of CSV rows, each read with its file's layout (from its header line; the documented one if it has none)."""
    df = _lineage(lines, source, default_batch_id).withColumn("raw_record", _clean_line(F.col("value")))
    header_line = _is_header(F.col("raw_record"), aliases)
    # One small row per file (a broadcast join, no shuffle of the data rows).
    headers = (
        df.where(header_line)
        .groupBy("source_file")
        .agg(F.min("raw_record").alias("_header"))
        .select("source_file", *_header_layout(F.col("_header"), aliases))
    )
    rows = df.where(~header_line).join(F.broadcast(headers), "source_file", "left")
    default_names = default_header.split(";" if ";" in default_header else ",")
    default_pos = {c: default_names.index(n) + 1 for n, c in aliases.items() if c and n in default_names}
    has_header = F.col("_sep").isNotNull()
    sep = F.coalesce(F.col("_sep"), F.lit(";" if ";" in default_header else ","))
    ncols = F.coalesce(F.col("_ncols"), F.lit(len(default_names)))
    line = F.col("raw_record")
    # Records the CSV reader parsed (`read_csv_records`) keep its fields; text lines, and
    # records it could not split into the expected width, are split here.
    parsed = F.col("_fields") if "_fields" in rows.columns else F.lit(None).cast("array<string>")
    fields = F.coalesce(parsed, F.when(sep == ";", _csv_fields(line, ";")).otherwise(_csv_fields(line, ",")))
    well_formed = parsed.isNotNull() | F.when(sep == ";", _csv_well_formed(line, ";")).otherwise(
        _csv_well_formed(line, ","))

    def value(column: str) -> Column:
        pos = F.when(has_header, F.col(f"_pos_{column}")).otherwise(F.lit(default_pos.get(column, 0)))
        return F.when(pos > 0, F.try_element_at(F.col("_fields"), pos))

    rows = rows.withColumn("_fields", fields)
    defect = F.coalesce(
        _malformed_unless(well_formed & (F.size(F.col("_fields")) == ncols)),
        F.when(F.coalesce(F.col("_unknown"), F.lit(False)), F.lit("unknown_column")),
    )
    fields = {c: value(c) for c in SOURCE_FIELDS}
    return _candidates(
        rows,
        fields,
        amount=parse_amount(F.trim(fields["amount"])),
        event_ts=parse_event_ts(F.trim(fields["event_ts"])),
        defect=defect,
    )


def map_s3_csv(lines: DataFrame, default_batch_id: str = "") -> DataFrame:
    """s3 partner CSV (BR numbers, São Paulo dd/mm/yyyy) -> candidates; header lines removed."""
    return _map_csv(lines, "s3", S3_CSV_ALIASES, S3_CSV_HEADER, default_batch_id, parse_br_amount,
                    parse_sao_paulo_datetime)


def map_db_csv(records: DataFrame, default_batch_id: str = "") -> DataFrame:
    """db COPY CSV records (`read_csv_records`: amount_cents, channel/status codes, timestamptz) ->
    candidates; header records removed."""
    return _map_csv(records, "db", DB_CSV_ALIASES, DB_CSV_HEADER, default_batch_id, parse_cents, parse_iso_offset)


# --- JSON -----------------------------------------------------------------------------


def _json_candidates(df: DataFrame, doc: Column, paths: dict[str, tuple[str, ...]],
                     ok: Callable[[Column], Column], event_id_path: str | None = None) -> DataFrame:
    """Candidates of parsed JSON records: `doc` (an expression of df's columns) is parsed once into a
    column, `ok(doc)` says whether the record could be read, each path's text is read once, and the
    first non-blank path of a field wins.

    Each step is its own projection: Spark does not share an expression between a condition and
    its branch, so written inline the parse and each path ran again inside the branches."""
    df = df.withColumn("_doc", doc)
    every_path = sorted({p for ps in paths.values() for p in ps} | ({event_id_path} if event_id_path else set()))
    column = {p: f"_path_{i}" for i, p in enumerate(every_path)}
    df = df.select("*", ok(F.col("_doc")).alias("_ok"),
                   *[F.try_variant_get(F.col("_doc"), p, "string").alias(column[p]) for p in every_path])
    fields = {c: F.coalesce(*[_blank_to_null(F.col(column[p])) for p in ps]) for c, ps in paths.items()}
    return _candidates(
        df,
        fields,
        amount=strict_decimal(F.trim(fields["amount"])),
        event_ts=parse_iso_offset(F.trim(fields["event_ts"])),
        defect=_malformed_unless(F.col("_ok")),
        event_id=_blank_to_null(F.col(column[event_id_path])) if event_id_path else None,
    )


def _readable_object(doc: Column) -> Column:
    """A record that parsed, and is an object (not a JSON string or number)."""
    return doc.isNotNull() & _is_object_text(F.col("raw_record"))


def _is_object_text(text: Column) -> Column:
    return F.ltrim(text).startswith("{")


def map_s3_jsonl(lines: DataFrame, default_batch_id: str = "") -> DataFrame:
    """s3 gateway JSON lines (nested; amount string or number; ISO-8601 offsets) -> candidates."""
    df = _lineage(lines, "s3", default_batch_id).withColumn("raw_record", _clean_line(F.col("value")))
    return _json_candidates(df, F.try_parse_json(F.col("raw_record")), S3_JSON_PATHS, _readable_object)


def _document_records(docs: DataFrame) -> DataFrame:
    """`.json` documents -> one row per record (`raw_record`): the elements of a JSON array,
    a single (pretty-printed) object, or else each line of the text (JSON lines, or the
    pieces of a broken file, each then a malformed record)."""
    text = F.regexp_replace(decode_text(F.col("value")), "^\ufeff", "")
    whole = F.trim(text)
    array = F.when(whole.startswith("["), F.from_json(whole, "array<variant>"))
    # JSON lines whenever the first line is a whole value (the parser ignores what follows
    # a complete value, so parsing the whole text would drop the other lines).
    first_line_whole = F.try_parse_json(F.regexp_extract(whole, r"^([^\n]*)", 1)).isNotNull()
    single = F.when(whole.startswith("{") & ~first_line_whole, F.try_parse_json(whole))
    lines = F.split(F.regexp_replace(text, r"\r?\n\s*$", ""), r"\r?\n")
    records = (
        F.when(array.isNotNull(), F.transform(array, lambda e: F.to_json(e)))
        .when(single.isNotNull(), F.array(F.to_json(single)))
        .otherwise(lines)
    )
    return docs.where(whole != "").withColumn("raw_record", F.explode(records)).withColumn(
        "raw_record", F.regexp_replace("raw_record", r"\r$", "")
    )


def map_s3_json_documents(docs: DataFrame, default_batch_id: str = "") -> DataFrame:
    """s3 `.json` files (a JSON array, one object or JSON lines) -> candidates, one per record."""
    df = _document_records(_lineage(docs, "s3", default_batch_id))
    return _json_candidates(df, F.try_parse_json(F.col("raw_record")), S3_JSON_PATHS, _readable_object)


def map_api_pages(pages: DataFrame, default_batch_id: str = "") -> DataFrame:
    """api pages `{"data": [record, ...], "next_cursor"}` -> one candidate per record.

    A page that cannot be read is one malformed record (its whole text); a record that
    is not a JSON object (e.g. a JSON string) is malformed."""
    df = _lineage(pages, "api", default_batch_id)
    text = F.trim(F.regexp_replace(decode_text(F.col("value")), "^\ufeff", ""))
    data = F.from_json(text, "struct<data: array<variant>>")["data"]
    records = F.when(data.isNotNull(), F.transform(data, lambda e: F.to_json(e))).otherwise(F.array(text))
    df = (
        df.where(text != "")
        .withColumn("_page_ok", data.isNotNull())
        .withColumn("raw_record", F.explode(records))
    )
    return _json_candidates(df, F.try_parse_json(F.col("raw_record")), API_PATHS,
                            lambda doc: F.col("_page_ok") & _readable_object(doc))


def map_kafka(lines: DataFrame, default_batch_id: str = "") -> DataFrame:
    """kafka envelopes `{"topic", "partition", "offset", "timestamp", "key", "value"}` whose
    value is the message text `{"event_id", "event_type", "produced_at", "payload": <api record>}`."""
    df = _lineage(lines, "kafka", default_batch_id).withColumn("raw_record", _clean_line(F.col("value")))
    df = df.withColumn("_envelope", F.try_parse_json(F.col("raw_record")))
    df = df.withColumn("_message_text", F.try_variant_get(F.col("_envelope"), "$.value", "string"))
    paths = {c: tuple("$.payload" + p[1:] for p in ps) for c, ps in API_PATHS.items()}

    def ok(message: Column) -> Column:
        return (
            _readable_object(F.col("_envelope"))
            & message.isNotNull()
            & _is_object_text(F.col("_message_text"))
            & _is_object_text(F.to_json(F.try_variant_get(message, "$.payload", "variant")))
        )

    return _json_candidates(df, F.try_parse_json(F.col("_message_text")), paths, ok, event_id_path="$.event_id")


# --- one day's raw zone -------------------------------------------------------------------


def _union(parts: list[DataFrame]) -> DataFrame | None:
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def map_s3(
    csv_lines: DataFrame | None,
    json_lines: DataFrame | None,
    default_batch_id: str = "",
    json_documents: DataFrame | None = None,
) -> DataFrame | None:
    """Candidates of every s3 file: CSV, JSON lines and JSON documents read separately."""
    parts = []
    if csv_lines is not None:
        parts.append(map_s3_csv(csv_lines, default_batch_id))
    if json_lines is not None:
        parts.append(map_s3_jsonl(json_lines, default_batch_id))
    if json_documents is not None:
        parts.append(map_s3_json_documents(json_documents, default_batch_id))
    return _union(parts)


def raw_day_files(list_files, lake, ingest_date: str) -> dict[str, list[str]]:
    """The raw files of one ingest day by shape (`fluxo.sources`); `list_files(root, suffixes)` lists recursively."""
    return {
        shape.name: list_files(lake.raw(source.name, ingest_date), shape.suffixes)
        for source in REGISTRY.values()
        for shape in source.shapes
    }


# How each raw shape of fluxo.sources is read and mapped to candidates. "csv" is PostgreSQL's COPY
# CSV, the db shape's (its width: the columns of DB_CSV_FIELDS).
READERS = {
    "lines": read_lines,
    "documents": read_documents,
    "csv": lambda spark, files: read_csv_records(spark, files, len(DB_CSV_FIELDS)),
}
MAPPERS = {
    "s3_csv": map_s3_csv,
    "s3_jsonl": map_s3_jsonl,
    "s3_json": map_s3_json_documents,
    "api": map_api_pages,
    "db": map_db_csv,
    "kafka": map_kafka,
}


def map_raw_day(spark, files: dict[str, list[str]], default_batch_id: str = "") -> DataFrame:
    """Candidates of every source shape with files (a missing source is normal)."""
    parts = [
        MAPPERS[shape.name](READERS[shape.read_as](spark, files[shape.name]), default_batch_id)
        for source in REGISTRY.values()
        for shape in source.shapes
        if files.get(shape.name)
    ]
    return _union(parts) or map_s3_csv(_empty_lines(spark), default_batch_id)


# --- canonical validation -----------------------------------------------------------


def rule_violated(rule: RowRule, value: Column) -> Column:
    """True where `value` breaks the contract's row rule (null where the rule does not apply, as in GX)."""
    if rule.kind == "required":
        return value.isNull()
    if rule.kind == "closed_set":
        return ~value.isin(*rule.value)
    if rule.kind == "pattern":
        return ~value.rlike(rule.value)
    if rule.kind == "max_length":
        return F.length(value) > rule.value
    if rule.kind == "min_exclusive":
        return value <= rule.value
    if rule.kind == "max_inclusive":
        return value > rule.value
    raise ValueError(f"no check for row rule kind {rule.kind!r}")


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
    c = candidates.withColumns({name: _blank_to_null(F.col(name)) for name in SOURCE_FIELDS})

    card = F.col("card_token")
    is_pan = card.rlike(PAN_PATTERN)
    fx = F.broadcast(
        fx_rates.select(F.upper(F.trim("currency")).alias("_fx_currency"), F.col("rate_to_brl").alias("_rate_to_brl"))
    )
    # Canonical values as the contract sees them. A value outside its closed set stays as it
    # came (not null), so the set's rule names it; amount_reporting keeps full precision until
    # its bounds are checked (conform casts it to decimal(18,2) afterwards).
    canonical = {
        "event_ts": F.col("_event_ts"),
        "amount": F.col("_amount"),
        "amount_reporting": F.round(
            F.col("_amount") * F.col("_rate_to_brl") / F.lit(rate_out).cast("decimal(20,10)"), 2
        ),
        "card_token": F.when(
            is_pan, F.concat(F.lit(TOKEN_PREFIX), F.substring(F.sha2(F.concat(F.lit(token_salt), card), 256), 1, 32))
        ).otherwise(card),
        "card_last4": F.when(is_pan, F.substring(card, -4, 4)).otherwise(F.col("card_last4")),
        "currency": F.upper(F.col("currency")),
        "country": F.upper(F.col("country")),
        "channel": F.coalesce(_lookup(CHANNEL_SYNONYMS, F.col("channel")), F.lower(F.col("channel"))),
        "status": F.coalesce(_lookup(STATUS_SYNONYMS, F.col("status")), F.lower(F.col("status"))),
    }
    c = c.join(fx, F.upper(F.col("currency")) == F.col("_fx_currency"), "left").select(
        "*", *[expr.alias(f"_canonical_{n}") for n, expr in canonical.items()]
    )

    def value(name: str) -> Column:
        return F.col(f"_canonical_{name}") if name in canonical else F.col(name)

    # First failing check wins, in the order of the reason table (docs/source-formats.md).
    checks: list[tuple[Column, str | Column]] = [(F.col("_defect").isNotNull(), F.col("_defect"))]
    checks += [(F.col(n).isNull(), f"missing_required:{n}") for n in SOURCE_FIELDS if n in TRANSACTION.required]
    checks += [
        (F.col("_amount").isNull(), "invalid_amount"),
        (F.col("_amount") <= 0, "non_positive_amount"),
        (F.col("_event_ts").isNull(), "invalid_timestamp"),
        (
            F.col("_event_ts") > F.col("ingested_at") + F.make_dt_interval(secs=F.lit(MAX_FUTURE_SKEW_SECONDS)),
            "future_event_ts",
        ),
    ]
    # A card number where an identifier belongs would be stored in clear past raw.
    checks += [(has_pan_sql(F.col(n)), f"pan_in_field:{n}") for n in PAN_CHECKED_COLUMNS]
    # Then every row rule of the contract (the rules the quality gate's contract suite checks),
    # so no row that would break one reaches the gate.
    rules = TRANSACTION.row_rules()
    values_first = [r for n in VALUE_CHECK_ORDER for r in rules if r.column == n and r.kind != "required"]
    converted = [r for r in rules if r.column == "amount_reporting" and r.kind != "required"]
    checks += [(rule_violated(r, value(r.column)), r.reason) for r in values_first]
    checks += [(F.col("_rate_to_brl").isNull(), "no_fx_rate:currency")]
    checks += [(rule_violated(r, value(r.column)), r.reason) for r in converted]
    # The remaining rules (required on every column, ...) are caught above by a more precise
    # reason; they stay as the last resort, so each contract row rule has a check here.
    checks += [(rule_violated(r, value(r.column)), r.reason) for r in rules if r not in values_first + converted]
    reason = F.coalesce(*[F.when(cond, F.lit(code) if isinstance(code, str) else code) for cond, code in checks])

    checked = c.select(
        *[value(n).alias(n) for n in TRANSACTION.names],
        reason.alias("reason"),
        F.col("raw_record"),
        F.col("source_file"),
        F.col("_event_id"),
    )
    # Copies of one valid transaction_id, and redeliveries of one Kafka event even when the
    # event is invalid, are duplicates: only the first (dedupe rule) is staged or quarantined.
    valid = F.col("reason").isNull()
    copy_key = F.when(valid, F.col("transaction_id")).when(
        F.col("_event_id").isNotNull(), F.concat(F.lit("event:"), F.col("_event_id"))
    )
    checked = rank_copies(checked.withColumn("_copy_key", copy_key), partition=[F.col("_copy_key"), valid])
    checked = (
        checked.withColumn("_duplicate", F.col("_copy_key").isNotNull() & (F.col("_copy_rank") > 1))
        .withColumn("reason", F.when(~F.col("_duplicate"), F.col("reason")))
        .drop("_copy_rank", "_copy_key", "_event_id")
    )
    return outputs(checked)


def outputs(checked: DataFrame) -> Standardized:
    """The staged and quarantined rows of the checked rows."""
    valid = F.col("reason").isNull()

    staged = conform(checked.where(valid & ~F.col("_duplicate")), TRANSACTION)
    # People read quarantine: no card number in it is readable (fluxo.tokenize, masked as <pan ****1111>).
    quarantine = conform(
        checked.where(~valid)
        .withColumn("raw_record", mask_pans_sql(F.col("raw_record")))
        .withColumn("source_file", mask_pans_sql(F.col("source_file")))
        .withColumn("quarantined_at", F.current_timestamp()),
        QUARANTINE,
    )
    return Standardized(staged=staged, quarantine=quarantine, checked=checked)


def _counts(rows) -> dict:
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
        "read": staged + quarantined + duplicates,
        "staged": staged,
        "quarantined": quarantined,
        "quarantine_by_reason": dict(sorted(by_reason.items())),
        "duplicates_in_batch": duplicates,
    }


def standardize_stats(checked: DataFrame) -> dict:
    """Counts of one standardize run from the checked rows (one small aggregation), in all and per source.

    `duplicates_in_batch`: copies dropped here, inside the day's batch (the same transaction
    again in one source or another, a Kafka redelivery); `duplicates_dropped` repeats it for the
    readers of the earlier name (the run audit).
    """
    rows = checked.groupBy("source", "reason", "_duplicate").count().collect()
    total = _counts(rows)
    by_source = {s: _counts([r for r in rows if r["source"] == s]) for s in sorted({r["source"] for r in rows})}
    return {"stage": "standardize", **total, "duplicates_dropped": total["duplicates_in_batch"], "by_source": by_source}
