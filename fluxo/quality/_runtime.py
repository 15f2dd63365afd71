"""Minimal Glue bootstrap for glue_scripts/quality_gate.py until the shared fluxo.glue_runtime lands."""

from __future__ import annotations

import json
import os
import sys
import traceback
from urllib.parse import urlparse


def parse_args(required: list[str], optional: dict[str, str]) -> dict[str, str]:
    from awsglue.utils import getResolvedOptions

    # getResolvedOptions rejects a missing option, so ask only for the optional ones passed.
    present = [name for name in optional if f"--{name}" in sys.argv]
    return {**optional, **getResolvedOptions(sys.argv, [*required, *present])}


def spark_session(app_name: str):
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )


def write_json(uri: str, document: dict) -> None:
    body = json.dumps(document, indent=2, default=str).encode()
    if uri.startswith(("s3://", "s3a://")):
        import boto3

        parsed = urlparse(uri)
        boto3.client("s3").put_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), Body=body)
        return
    path = uri.removeprefix("file://")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(body)


def write_stats(lake_root: str, ingest_date: str, stage: str, stats: dict) -> None:
    from fluxo.lake import Lake

    write_json(Lake(lake_root).work("stats", f"ingest_date={ingest_date}", f"{stage}.json"), stats)


def run_stage(main) -> None:
    try:
        main()
    except Exception as exc:  # noqa: BLE001 - every failure must reach the operator as one line
        traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"FLUXO_ERROR: {message}", file=sys.stderr, flush=True)
        sys.exit(1)
