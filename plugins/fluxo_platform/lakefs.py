"""Reading and writing lake files from outside Spark (Airflow tasks, the demo, tests).

The lake root is a local path or an s3:// URI; both go through pyarrow's
filesystems (pyarrow's S3FileSystem copes with the folder markers that trip s3fs).
"""

from __future__ import annotations

import json
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from fluxo_platform.settings import FluxoSettings, get_settings


def resolve(uri: str, settings: FluxoSettings | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or an s3:// URI."""
    if uri.startswith("s3://") or uri.startswith("s3a://"):
        s = settings or get_settings()
        parsed = urlparse(uri)
        kwargs: dict = {"region": s.aws_region}
        if s.s3_endpoint:
            endpoint = urlparse(s.s3_endpoint)
            kwargs.update(
                endpoint_override=endpoint.netloc,
                scheme=endpoint.scheme or "http",
                access_key=s.s3_access_key or None,
                secret_key=s.s3_secret_key or None,
            )
        return pafs.S3FileSystem(**kwargs), f"{parsed.netloc}{parsed.path}".rstrip("/")
    return pafs.LocalFileSystem(), uri.removeprefix("file://")


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


def read_parquet(uri: str) -> pa.Table | None:
    """Every Parquet file under a folder as one table, or None when the folder is missing."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    dataset = ds.dataset(path, filesystem=fs, format="parquet", partitioning="hive", exclude_invalid_files=True)
    return dataset.to_table()
