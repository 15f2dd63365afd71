"""The curated zone's transactions, read without Spark, local or on S3.

Today the zone is hive-partitioned Parquet (`<lake_root>/curated/transactions/event_date=D/`);
Spark will write it as a Delta table at the same path, partitioned by event_date. One reader
serves both: a `_delta_log` makes it a Delta table (delta-rs, latest version), otherwise a
Parquet dataset. A `day` hint prunes the scan to one partition.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from fluxo.history import open_table, storage_options
from fluxo.lake import Lake

PARTITIONING = ds.partitioning(pa.schema([("event_date", pa.date32())]), flavor="hive")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path in it): S3 configured like the Delta reader (FLUXO_S3_*), else local."""
    options = storage_options(uri)
    if options is None:
        return pafs.LocalFileSystem(), uri.removeprefix("file://")
    endpoint = urlparse(options.get("AWS_ENDPOINT_URL", ""))
    s3 = pafs.S3FileSystem(
        region=options["AWS_REGION"], access_key=options.get("AWS_ACCESS_KEY_ID"),
        secret_key=options.get("AWS_SECRET_ACCESS_KEY"), endpoint_override=endpoint.netloc or None,
        scheme=endpoint.scheme or "https")
    bucket_and_key = urlparse(uri)
    return s3, f"{bucket_and_key.netloc}{bucket_and_key.path}".rstrip("/")


def curated_dataset(lake_root: str) -> ds.Dataset | None:
    """The curated transactions as a pyarrow dataset (Delta or Parquet), None when there are none."""
    uri = Lake(lake_root).curated_transactions
    table = open_table(uri)
    if table is not None:
        return table.to_pyarrow_dataset()
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return None
    return ds.dataset(path, filesystem=fs, format="parquet", partitioning=PARTITIONING, exclude_invalid_files=True)


def find_transaction(lake_root: str, transaction_id: str, day: date | None = None) -> dict[str, Any] | None:
    """The curated row of one transaction (with its event_date), or None."""
    dataset = curated_dataset(lake_root)
    if dataset is None:
        return None
    condition = ds.field("transaction_id") == transaction_id
    if day is not None:
        condition = condition & (ds.field("event_date") == pa.scalar(day, pa.date32()))
    found = dataset.to_table(filter=condition)
    if found.num_rows == 0:
        return None
    return found.slice(0, 1).to_pylist()[0]
