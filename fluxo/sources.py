"""The sources fluxo extracts, each described once.

Every part that handles a source derives from this registry: the DAG makes one extract
task per source (`extract_task`), the extractors land files of the source's raw shapes,
standardize lists each shape's files by suffix and maps them with the shape's mapper
(`fluxo.transforms.standardize.MAPPERS[shape.name]`), the generator renders the same
shapes, and the run audit reads each extract task's result. The formats themselves are
documented in docs/source-formats.md.

Nothing here imports Spark or Airflow: the DAG file, the extractors and the Glue
library all read it.
"""

from __future__ import annotations

from dataclasses import dataclass

# File kinds the raw zone accepts: extraction lands them, standardize reads them.
CSV_SUFFIXES = (".csv", ".csv.gz")
JSON_LINES_SUFFIXES = (".jsonl", ".jsonl.gz")
JSON_DOCUMENT_SUFFIXES = (".json", ".json.gz")
JSON_SUFFIXES = JSON_LINES_SUFFIXES + JSON_DOCUMENT_SUFFIXES


@dataclass(frozen=True)
class RawShape:
    """One kind of raw file of a source."""

    name: str
    suffixes: tuple[str, ...]
    # how standardize reads a file: "lines" (one record per line), "documents" (the whole
    # file is one text: a JSON array, an API page), "csv" (CSV records, whose quoted values
    # may hold line breaks)
    read_as: str
    description: str


@dataclass(frozen=True)
class Source:
    name: str
    title: str
    # task id of its extraction in the DAG's `extract` task group
    extract_task: str
    shapes: tuple[RawShape, ...]

    @property
    def extract_task_id(self) -> str:
        return f"extract.{self.extract_task}"


# The OLTP table the db source reads, in the column order of its landed COPY files.
DB_TABLE = "payments.card_transaction"
DB_COLUMNS = (
    "id", "txn_uuid", "customer_id", "card_token", "card_last4", "merchant_id", "mcc", "amount_cents",
    "currency", "country", "channel_code", "status_code", "created_at", "updated_at",
)
DB_TIMESTAMP_COLUMNS = ("created_at", "updated_at")

REGISTRY: dict[str, Source] = {
    source.name: source
    for source in (
        Source(
            "s3", "CSV/JSON files a partner drops in the landing bucket", "land_s3_files",
            (
                RawShape("s3_csv", CSV_SUFFIXES, "lines", "`;` or `,` CSV with a header, Brazilian formats"),
                RawShape("s3_jsonl", JSON_LINES_SUFFIXES, "lines", "one JSON object per line"),
                RawShape("s3_json", JSON_DOCUMENT_SUFFIXES, "documents", "a JSON array, one object, or JSON lines"),
            ),
        ),
        Source(
            "api", "the partner's paged REST API", "extract_partner_api",
            (RawShape("api", JSON_DOCUMENT_SUFFIXES, "documents", "one landed response page per file"),),
        ),
        Source(
            "db", "the OLTP database (incremental by updated_at)", "extract_source_db",
            (RawShape("db", CSV_SUFFIXES, "csv", f"COPY of {DB_TABLE}, header line, columns DB_COLUMNS"),),
        ),
        Source(
            "kafka", "the card-events Kafka topic", "land_kafka",
            (RawShape("kafka", JSON_LINES_SUFFIXES, "lines", "one envelope (offset, key, payload) per line"),),
        ),
    )
}
SOURCE_NAMES = tuple(REGISTRY)
SHAPES: dict[str, RawShape] = {shape.name: shape for source in REGISTRY.values() for shape in source.shapes}


def shape_source(shape: str) -> Source:
    for source in REGISTRY.values():
        if any(s.name == shape for s in source.shapes):
            return source
    raise KeyError(f"no source has the raw shape {shape!r}")


def parse_sources(text: str | None) -> tuple[str, ...]:
    """A comma-separated subset of the sources, in registry order; an unknown name is an error."""
    chosen = {s.strip() for s in (text or "").split(",") if s.strip()}
    unknown = chosen - set(REGISTRY)
    if unknown:
        raise ValueError(f"unknown source(s) {', '.join(sorted(unknown))}: choose from {', '.join(REGISTRY)}")
    return tuple(name for name in REGISTRY if name in chosen)
