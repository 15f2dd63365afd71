"""Extractors: land source data in the raw zone before anything else touches it.

Each extractor is named after its source's `extract_task` in `fluxo.sources.REGISTRY`.
"""

from fluxo_extract.database import extract_source_db
from fluxo_extract.kafka_stream import land_kafka
from fluxo_extract.rest_api import extract_partner_api
from fluxo_extract.s3_files import land_s3_files

__all__ = ["extract_partner_api", "extract_source_db", "land_kafka", "land_s3_files"]
