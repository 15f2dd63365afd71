"""Every setting of the platform in one place (environment variables prefixed FLUXO_).

`fluxo_dev.stack up` writes the endpoints of the local services to `<home>/stack.env`,
which is read here as a fallback, so an explicitly set variable (an external
service) always wins over the embedded one.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from fluxo.sources import SOURCE_NAMES, parse_sources

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_home() -> Path:
    return Path(os.environ.get("FLUXO_HOME", REPO_ROOT / ".fluxo")).resolve()


class FluxoSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLUXO_", env_file=str(default_home() / "stack.env"), extra="ignore"
    )

    home: Path = default_home()
    # A local path or an s3:// URI; every zone lives under it.
    lake_root: str = str(default_home() / "lake")
    # "local": Glue scripts run here with spark-submit; "aws": AWS Glue runs them.
    glue_mode: Literal["local", "aws"] = "local"
    reporting_currency: str = "BRL"
    # sources transactions_etl extracts (comma-separated); the others are skipped
    sources: str = ",".join(SOURCE_NAMES)
    # secret salt of card tokens (generated for development by `fluxo_dev.stack`)
    token_salt: str = ""

    database_url: str = ""
    # the OLTP system the db extractor reads (a local database in development)
    source_database_url: str = ""
    kafka_bootstrap: str = ""
    s3_endpoint: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    aws_region: str = "us-east-1"
    landing_bucket: str = "fluxo-landing"
    landing_prefix: str = "transactions"

    # AWS Glue job definitions (glue_mode=aws)
    glue_artifacts_bucket: str = "fluxo-glue-artifacts"
    glue_role: str = "fluxo-glue-role"
    glue_worker_type: str = "G.1X"
    glue_number_of_workers: int = 2
    glue_job_prefix: str = "fluxo-"

    # Local Spark for Glue scripts
    spark_driver_memory: str = "4g"
    spark_shuffle_partitions: int = 8

    @property
    def enabled_sources(self) -> tuple[str, ...]:
        return parse_sources(self.sources)

    @property
    def data_dir(self) -> Path:
        return self.home / "data"


@lru_cache
def get_settings() -> FluxoSettings:
    return FluxoSettings()
