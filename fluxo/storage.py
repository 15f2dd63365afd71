"""Small files of the lake from a stage's driver, without the JVM: pyarrow filesystems.

A stage's Spark session may be local, inside AWS Glue, or a Spark Connect server elsewhere
(`fluxo.spark`); the driver program itself always runs here, so its own reads and writes
(results documents, suites, the raw files to hand to Spark, Data Docs) go through pyarrow:
a local folder, or S3 for `s3://`/`s3a://` URIs. S3 takes its endpoint and keys from
FLUXO_S3_ENDPOINT / FLUXO_S3_ACCESS_KEY / FLUXO_S3_SECRET_KEY when set (the local S3 server),
else AWS's default chain (the Glue job's role). Paths keep the scheme they were given in.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from urllib.parse import urlparse

import pyarrow.fs as pafs

S3_SCHEMES = ("s3://", "s3a://")


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def s3_filesystem(env: Mapping[str, str] | None = None) -> pafs.S3FileSystem:
    env = os.environ if env is None else env
    kwargs: dict = {"region": env.get("FLUXO_AWS_REGION") or env.get("AWS_REGION") or "us-east-1"}
    endpoint = env.get("FLUXO_S3_ENDPOINT")
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "http")
    if env.get("FLUXO_S3_ACCESS_KEY"):
        kwargs.update(access_key=env["FLUXO_S3_ACCESS_KEY"], secret_key=env.get("FLUXO_S3_SECRET_KEY", ""))
    return pafs.S3FileSystem(**kwargs)


def filesystem(uri: str, env: Mapping[str, str] | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or an s3:// / s3a:// URI."""
    if uri.startswith(S3_SCHEMES):
        parsed = urlparse(uri)
        return s3_filesystem(env), f"{parsed.netloc}{parsed.path}".rstrip("/")
    return pafs.LocalFileSystem(), uri.removeprefix("file://")


def _join(uri: str, relative: str) -> str:
    return f"{uri.rstrip('/')}/{relative.lstrip('/')}"


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_text(uri: str) -> str | None:
    """The UTF-8 content of one file, or None when it does not exist."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path, compression=None) as stream:
        return stream.read().decode("utf-8")


def write_text(uri: str, text: str) -> None:
    """Write one UTF-8 file (replacing it); on S3 a single PUT, so readers see all of it or nothing."""
    fs, path = filesystem(uri)
    if "/" in path:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path, compression=None) as out:
        out.write(text.encode("utf-8"))


def delete(uri: str) -> bool:
    """Delete a file or a folder with everything in it; False when there was nothing."""
    fs, path = filesystem(uri)
    kind = fs.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif kind == pafs.FileType.File:
        fs.delete_file(path)
    return kind != pafs.FileType.NotFound


def _files(uri: str) -> list[tuple[str, str]]:
    """(path relative to uri, path in the filesystem) of every file under uri; [] when it does not exist."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    found = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted(
        (info.path[len(path):].lstrip("/"), info.path) for info in found if info.type == pafs.FileType.File
    )


def list_files(root: str, suffixes: tuple[str, ...]) -> list[str]:
    """Every file under root (recursively) whose name ends with one of suffixes, as URIs in root's
    scheme; files or folders whose name starts with `.` or `_` are skipped (markers, logs)."""
    out = []
    for relative, _ in _files(root):
        parts = relative.split("/")
        if any(part.startswith((".", "_")) for part in parts):
            continue
        if parts[-1].lower().endswith(suffixes):
            out.append(_join(root, relative))
    return out


def copy_tree(source: str, target: str) -> int:
    """Copy every file under `source` to the same relative path under `target` (a local folder to S3,
    say); files already at the target are kept. Returns the number of files copied."""
    files = _files(source)
    if not files and not exists(source):
        raise FileNotFoundError(f"nothing to copy: {source} does not exist")
    src_fs, _ = filesystem(source)
    copied = 0
    for relative, src_path in files:
        destination = _join(target, relative)
        if exists(destination):
            continue
        dst_fs, dst_path = filesystem(destination)
        dst_fs.create_dir(dst_path.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(src_path, dst_path, source_filesystem=src_fs, destination_filesystem=dst_fs)
        copied += 1
    return copied


def _local_fingerprints(folder: str) -> dict[str, tuple[int, str]]:
    """(size, SHA-1) of every file under a local folder, by path relative to it."""
    found = {}
    for parent, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder).replace(os.sep, "/")] = (
                    os.path.getsize(path), hashlib.sha1(f.read()).hexdigest())
    return found


@contextlib.contextmanager
def local_copy(uri: str, children: tuple[str, ...]) -> Iterator[str]:
    """A local folder standing for the lake folder `uri` (its `children` folders), for tools that
    only write local files (GX Data Docs): the folder itself when the lake is local; else a
    temporary copy, whose changes go back when the block ends without error: new and changed
    files first, then the deletions, so a failure half way never loses an earlier page or
    result, and a site of a year of runs is not uploaded again for one new page."""
    if is_local(uri):
        path = uri.removeprefix("file://")
        os.makedirs(path, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="fluxo-local-copy-") as local:
        for child in children:
            if exists(_join(uri, child)):
                copy_tree(_join(uri, child), os.path.join(local, child))
        before = _local_fingerprints(local)
        yield local
        after = {relative: fingerprint for relative, fingerprint in _local_fingerprints(local).items()
                 if relative.split("/", 1)[0] in children}
        fs, base = filesystem(uri)
        local_fs = pafs.LocalFileSystem()
        for relative in sorted(r for r, fingerprint in after.items() if before.get(r) != fingerprint):
            target = f"{base}/{relative}"
            fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            pafs.copy_files(os.path.join(local, relative), target, source_filesystem=local_fs, destination_filesystem=fs)
        kept = {child for child in children if os.path.isdir(os.path.join(local, child))}
        for relative in sorted(set(before) - set(after)):
            if relative.split("/", 1)[0] in kept:
                fs.delete_file(f"{base}/{relative}")
