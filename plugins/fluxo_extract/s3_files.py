"""Land the day's partner files (CSV/JSON in the landing bucket) into the raw zone.

The connection `fluxo_s3` carries the endpoint, so the local S3 server and AWS
use the same code. A rerun of a day replaces that day's batch folder.
"""

from __future__ import annotations

import logging
import time

from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from fluxo import lakefs
from fluxo.lake import Lake
from fluxo.settings import get_settings

log = logging.getLogger(__name__)
LANDABLE_SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".json", ".json.gz")


def land_day(ingest_date: str, aws_conn_id: str = "fluxo_s3") -> dict:
    settings = get_settings()
    hook = S3Hook(aws_conn_id=aws_conn_id)
    prefix = f"{settings.landing_prefix}/dt={ingest_date}/"
    keys = sorted(hook.list_keys(bucket_name=settings.landing_bucket, prefix=prefix) or [])
    batch_id = f"s3-{ingest_date}"
    dest = Lake(settings.lake_root).raw("s3", ingest_date, batch_id)
    lakefs.delete_dir(dest)
    started, landed, skipped, total_bytes = time.monotonic(), 0, [], 0
    client = hook.get_conn()
    for key in keys:
        name = key.rsplit("/", 1)[-1]
        if not name.lower().endswith(LANDABLE_SUFFIXES):
            skipped.append(key)
            continue
        body = client.get_object(Bucket=settings.landing_bucket, Key=key)["Body"].read()
        lakefs.write_bytes(f"{dest}/{name}", body)
        landed += 1
        total_bytes += len(body)
        log.info("landed s3://%s/%s (%d bytes) -> %s", settings.landing_bucket, key, len(body), dest)
    if skipped:
        log.warning("skipped %d objects that are not CSV/JSON: %s", len(skipped), skipped[:10])
    if not keys:
        log.warning("no objects under s3://%s/%s: the day lands empty", settings.landing_bucket, prefix)
    log.info("landed %d files, %.1f MB in %.1fs", landed, total_bytes / 1e6, time.monotonic() - started)
    return {"batch_id": batch_id, "files": landed, "bytes": total_bytes, "skipped_objects": len(skipped)}
