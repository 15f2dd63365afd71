"""Reading and writing the lake from outside Spark (Airflow tasks, the API, the demo, tests).

The lake root is a local path or an s3:// URI; both go through pyarrow's
filesystems (pyarrow's S3FileSystem copes with the folder markers that trip s3fs).
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from fluxo import storage
from fluxo.contract import OUTLIER
from fluxo_platform.settings import FluxoSettings, get_settings


def resolve(uri: str, settings: FluxoSettings | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or an s3:// URI, S3 configured from the settings
    (which also read the local stack's stack.env), the way the stages' `fluxo.storage` does from
    their environment."""
    s = settings or get_settings()
    return storage.filesystem(uri, {
        "FLUXO_AWS_REGION": s.aws_region, "FLUXO_S3_ENDPOINT": s.s3_endpoint,
        "FLUXO_S3_ACCESS_KEY": s.s3_access_key, "FLUXO_S3_SECRET_KEY": s.s3_secret_key,
    })


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def open_output(uri: str):
    """A binary output stream; bytes are stored exactly as written (no compression by file extension)."""
    fs, path = resolve(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    return fs.open_output_stream(path, compression=None)


def write_bytes(uri: str, data: bytes) -> None:
    with open_output(uri) as out:
        out.write(data)


def delete_dir(uri: str) -> None:
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def read_json(uri: str) -> dict | None:
    """A JSON document, or None when it does not exist."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path, compression=None) as f:
        return json.loads(f.read())


def write_json(uri: str, document: dict) -> None:
    write_bytes(uri, json.dumps(document, sort_keys=True, default=str).encode("utf-8"))


def read_parquet(uri: str) -> pa.Table | None:
    """Every Parquet file under a folder as one table, or None when the folder is missing."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    import pyarrow.dataset as ds  # it loads pandas (0.15 s): only the readers of Parquet pay for it

    dataset = ds.dataset(path, filesystem=fs, format="parquet", partitioning="hive", exclude_invalid_files=True)
    return dataset.to_table()


# --- Delta tables, read with delta-rs (no Spark: the API, the Airflow worker, tests) -------------


def storage_options(uri: str, settings: FluxoSettings | None = None) -> dict[str, str] | None:
    """delta-rs object-store options for an s3:// table (None for a local path).

    Endpoint and credentials come from the FLUXO_S3_* settings; anything unset falls back to
    delta-rs' own AWS_* environment / instance-profile lookup.
    """
    if not uri.startswith(("s3://", "s3a://")):
        return None
    s = settings or get_settings()
    options = {"AWS_REGION": s.aws_region}
    if s.s3_endpoint:
        options["AWS_ENDPOINT_URL"] = s.s3_endpoint
        options["AWS_ALLOW_HTTP"] = "true" if urlparse(s.s3_endpoint).scheme == "http" else "false"
        options["AWS_S3_ADDRESSING_STYLE"] = "path"
    if s.s3_access_key:
        options["AWS_ACCESS_KEY_ID"] = s.s3_access_key
        options["AWS_SECRET_ACCESS_KEY"] = s.s3_secret_key
    return options


def delta_uri(uri: str) -> str:
    return uri.replace("s3a://", "s3://", 1).removeprefix("file://")


def open_delta(uri: str, version: int | None = None, as_of: datetime | str | None = None):
    """The DeltaTable at uri (latest, a version, or as of a point in time; a naive datetime is UTC),
    or None when no table exists there yet."""
    from deltalake import DeltaTable

    if version is not None and as_of is not None:
        raise ValueError("give either version or as_of, not both")
    path, options = delta_uri(uri), storage_options(uri)
    if not DeltaTable.is_deltatable(path, storage_options=options):
        return None
    table = DeltaTable(path, storage_options=options)
    if version is not None:
        table.load_as_version(int(version))
    elif as_of is not None:
        moment = datetime.fromisoformat(as_of) if isinstance(as_of, str) else as_of
        table.load_as_version(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))
    return table


def read_delta(
    uri: str,
    schema: pa.Schema,
    version: int | None = None,
    as_of: datetime | str | None = None,
    filters: list | None = None,
) -> pa.Table:
    """A Delta table's rows as Arrow, cast to `schema` (empty when the table does not exist)."""
    table = open_delta(uri, version, as_of)
    if table is None:
        return schema.empty_table()
    data = table.to_pyarrow_table(filters=filters)
    return pa.Table.from_arrays([data.column(f.name).cast(f.type) for f in schema], schema=schema)


def delta_history(uri: str, limit: int | None = None) -> list[dict]:
    """The table's commits, newest first: version, timestamp (UTC), operation, parameters, metrics, userMetadata."""
    table = open_delta(uri)
    if table is None:
        return []
    commits = [
        {
            "version": h.get("version"),
            "timestamp": datetime.fromtimestamp(h["timestamp"] / 1000, tz=timezone.utc),
            "operation": h.get("operation"),
            "parameters": h.get("operationParameters") or {},
            "metrics": h.get("operationMetrics") or {},
            "user_metadata": h.get("userMetadata"),
        }
        for h in table.history(limit)
    ]
    return sorted(commits, key=lambda c: c["version"], reverse=True)


def read_outliers(
    uri: str, version: int | None = None, as_of: datetime | str | None = None, event_dates: list[str] | None = None
) -> pa.Table:
    """The outlier history (latest, a version or a point in time), sorted by its key."""
    filters = [("event_date", "in", sorted({date.fromisoformat(str(d)) for d in event_dates}))] if event_dates else None
    rows = read_delta(uri, OUTLIER.arrow_schema(), version, as_of, filters)
    return rows.sort_by([(k, "ascending") for k in OUTLIER.key])
