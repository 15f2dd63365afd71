"""Seeded synthetic card transactions in the four source shapes, with ground truth.

    generate(out_dir, start, days, rows_per_day, seed=42, sources=("s3", "api", "db", "kafka")) -> summary
    upload_landing(out_dir, days=None, settings=None) -> uploaded keys

Layout under out_dir (docs/source-formats.md describes each shape):

    s3/dt=D/transactions-D-NNN.csv   s3/dt=D/gateway-D.jsonl
    api/dt=D/page-NNNN.json          db/dt=D/card_transaction.csv
    kafka/dt=D/events.jsonl          (one message value per line; key = payload.transaction_id)
    truth/transactions.parquet       one row per valid transaction_id, canonical values
    labels/labels.parquet            one row per rendered record: defect, expected, expected_reason
    manifest.json                    parameters and counts

The expected curated set for sources S is the distinct transaction_id of labels
with source in S and expected == "valid"; every valid record of a transaction
renders the same canonical values. With a subset of the sources, each transaction is rendered
as in the full run, except the rows of a planted fraud scenario: those move into a rendered
source, so every scenario the truth labels arrives whole.
"""

from .core import LABELS_SCHEMA, canonical_days, generate, parse_sources, truth_schema, upload_landing
from .defects import DEFAULT_DEFECT_RATES, DEFECTS, QUARANTINED
from .render import api_cursor

__all__ = [
    "DEFAULT_DEFECT_RATES", "DEFECTS", "LABELS_SCHEMA", "QUARANTINED", "api_cursor", "canonical_days", "generate", "parse_sources",
    "truth_schema", "upload_landing",
]
