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
    # env_ignore_empty: FLUXO_X="" means "the default" (docker-compose.yaml passes ${FLUXO_X:-} through)
    model_config = SettingsConfigDict(
        env_prefix="FLUXO_", env_file=str(default_home() / "stack.env"), extra="ignore", env_ignore_empty=True
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
    # AWS Glue stops a job run after this long (the AWS default is 48 h); Glue's own retries of a failed run
    glue_timeout_minutes: int = 120
    glue_max_retries: int = 0
    # MWAA: `make deploy` uploads dags/, plugins.zip and requirements.txt here when set (s3://bucket[/prefix])
    mwaa_source_uri: str = ""

    # Operating transactions_etl from Airflow (docs/runbook.md)
    # Alerts (failures, missed deadlines, stale data, odd volumes) are POSTed here as JSON; empty = logged only
    alert_webhook_url: str = ""
    # a run still going after this long is an SLA miss (deadline alert); after run_timeout it is stopped
    run_deadline_minutes: float = 180
    run_timeout_minutes: float = 360
    # the freshness check alerts when the latest curated day ended longer ago than this
    freshness_max_age_hours: float = 48
    # a day's staged rows outside [norm / ratio, norm * ratio] of the recent days (or zero) is a warning
    volume_tolerance_ratio: float = 3.0
    volume_history_days: int = 14

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
