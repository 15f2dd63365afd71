"""Land new partner files (CSV/JSON in the landing bucket) into the raw zone, exactly once.

    land_s3_files(ingest_date, aws_conn_id="fluxo_s3", prefixes=None, bucket=None, conn=None) -> counts

What a run does:

* Lists every object under `s3://<landing_bucket>/<landing_prefix>/` (or the given
  prefixes) through `S3Hook`; the `fluxo_s3` connection carries the endpoint, so the
  local S3 server and AWS run the same code.
* Skips what the manifest `extract.s3_object` (bucket, key, ETag) already holds: a file
  uploaded again unchanged (same ETag) lands once; a changed file (new ETag) lands again.
  Which day folder (`dt=`) an object sits in does not matter: a late file for an old
  day lands with the run that first sees it, under that run's ingest date.
* Streams each new object (`GetObject` pinned to the listed ETag, so the bytes landed are
  the bytes recorded; an object replaced in between is left for the next run) into one
  `LandingBatch(lake, "s3", ingest_date)`, then publishes it to
  `raw/s3/ingest_date=D/batch=B/` and confirms it (batch + manifest rows + a
  `{"last_listed": ...}` watermark) in one warehouse transaction. Objects are never held
  in memory whole, so multi-GB exports land in constant memory.
* Raw file names are the key below the prefix with `/` turned into `__`
  (`dt=2026-11-26__export.csv`), so equal basenames in different day folders never clash.
  Gzip content under a name without `.gz` lands with `.gz` appended, so readers decompress it.

File-level hostility is decided here; rows are the standardize stage's business:

* `empty_file`: a 0-byte object, or a gzip that decompresses to nothing;
* `unreadable_file`: a gzip that does not decompress (truncated, corrupt, not gzip at all),
  checked while streaming with zlib (bounded output, so a gzip bomb cannot fill memory).

People read quarantine and a partner file may hold raw card numbers, so the received bytes of a
quarantined gzip are not kept: `quarantine/ingest_date=D/stage=extract/source=s3/files/batch=B/<name>.masked.txt`
holds a readable rendering instead (what inflates of it, or the bytes themselves when nothing does,
as text, UTF-8 or else latin-1 line by line, every PAN-shaped sequence masked by
`fluxo.tokenize.mask_pans`, at most MAX_RENDERED_BYTES), and the quarantine record gives the
object's URI, ETag, size and the SHA-256 of the bytes received. Keeping the original would need an
encrypted, access-restricted area with its own retention — a second PCI DSS scope — for bytes
that cannot be read anyway; the partner re-sends a fixed file, which lands as a changed object.
Log lines and quarantine details are masked too.

Quarantined objects go into the manifest too (not retried until they change; the manifest
has no reason column, so the reason is in the batch's quarantine file and in
`extract.batch.counts.quarantine_by_reason`). Objects with other extensions are counted as
`skipped_unsupported` and logged, and not recorded, so they land once support is added.
Folder markers (keys ending in `/`) are ignored.

Returns `batch_id`, `raw_path` and the counts `listed`, `files`, `landed_bytes`, `quarantined`,
`quarantine_by_reason`, `skipped_seen`, `skipped_unsupported`, `skipped_changed`, where
`listed = files + quarantined + skipped_seen + skipped_unsupported + skipped_changed`
(the same counts go into `extract.batch.counts`). A run with nothing new still returns a
batch_id: an empty batch, recorded, with no raw folder.

State lives in the warehouse, reached through the `fluxo_warehouse` Airflow connection (or
the `conn` given, a psycopg 3 connection in autocommit mode). Runs over the same bucket are
serialised by a PostgreSQL advisory lock, so two concurrent runs never land the same object
twice. A crash after publishing and before confirming lands those objects again next run
(in a new batch); curate keeps one row per transaction_id.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone

import pyarrow.fs as pafs
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from botocore.exceptions import ClientError

from fluxo_platform import lakefs
from fluxo.lake import Lake
from fluxo.sources import REGISTRY
from fluxo.tokenize import mask_pans, mask_pans_bytes
from fluxo_platform.settings import get_settings
from fluxo_extract.landing import ExtractState, LandingBatch
from fluxo_platform.warehouse import warehouse_connection

log = logging.getLogger(__name__)
SOURCE = "s3"
LANDABLE_SUFFIXES = tuple(suffix for shape in REGISTRY["s3"].shapes for suffix in shape.suffixes)
GZIP_MAGIC = b"\x1f\x8b"
MAX_NAME = 200  # file systems cap a name at 255 bytes; ".gz" may still be appended
CHUNK = 8 * 1024 * 1024
# Bounded inflate per step while checking a gzip: memory stays flat whatever the ratio.
INFLATE_STEP = 1024 * 1024
# A quarantined file's masked rendering stops after this much text.
MAX_RENDERED_BYTES = 16 * 1024 * 1024
RENDERED_SUFFIX = ".masked.txt"
VANISHED = {"PreconditionFailed", "NoSuchKey", "404", "412"}


class GzipCheck:
    """Inflate a gzip stream chunk by chunk (multi-member aware) to prove it is complete;
    `sink`, when given, receives the inflated bytes."""

    def __init__(self, sink=None) -> None:
        self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        self.inflated_bytes = 0
        self.error = ""
        self._sink = sink

    def feed(self, data: bytes) -> None:
        if self.error:
            return
        try:
            while data:
                inflated = self._inflater.decompress(data, INFLATE_STEP)
                self.inflated_bytes += len(inflated)
                if self._sink is not None and inflated:
                    self._sink(inflated)
                data = self._inflater.unconsumed_tail
                if not data and self._inflater.eof:
                    data = self._inflater.unused_data
                    if data.strip(b"\x00"):  # another member follows (concatenated gzip)
                        self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
                    else:
                        data = b""
        except zlib.error as exc:
            self.error = f"not a valid gzip stream: {exc}"

    def finish(self) -> str:
        """The reason the stream is unreadable, or "" when it is a complete gzip."""
        if not self.error and not self._inflater.eof:
            self.error = "truncated gzip: the stream ends before its end-of-stream marker"
        return self.error


class _MaskedRendering:
    """Bytes -> text lines with every PAN-shaped sequence masked, written to `out`, at most MAX_RENDERED_BYTES."""

    def __init__(self, out) -> None:
        self.out, self.pending, self.written, self.full = out, b"", 0, False

    def write(self, data: bytes) -> None:
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            self._emit(line + b"\n")
        if len(self.pending) > MAX_RENDERED_BYTES:  # one endless line
            self._emit(self.pending)
            self.pending = b""

    def close(self) -> None:
        if self.pending:
            self._emit(self.pending)
        self.pending = b""

    def _emit(self, line: bytes) -> None:
        if self.full:
            return
        text = mask_pans_bytes(line).encode("utf-8")
        if self.written + len(text) > MAX_RENDERED_BYTES:
            text = text[: MAX_RENDERED_BYTES - self.written].decode("utf-8", errors="ignore").encode("utf-8")
            text += b"\n[rendering cut at MAX_RENDERED_BYTES]\n"
            self.full = True
        self.out.write(text)
        self.written += len(text)


def _objects(objects: list, *_ignored) -> list:
    """`S3Hook.list_keys` object filter keeping the listing entries whole (ETag, Size)."""
    return objects


def _short_hash(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:8]


def raw_name(key: str, prefix: str) -> str:
    """The key below the prefix as one file name; keys too long for a file system keep their tail."""
    relative = key[len(prefix):] if key.startswith(prefix) else key
    name = re.sub(r"[^A-Za-z0-9._=-]", "_", relative.strip("/").replace("/", "__"))
    return name if len(name) <= MAX_NAME else f"{_short_hash(key)}-{name[-(MAX_NAME - 9):]}"


def _unique(name: str, key: str, used: set[str]) -> str:
    if name in used:
        name = f"{_short_hash(key)}-{name}"
    used.add(name)
    return name


def _normalise_prefixes(prefixes: str | Sequence[str] | None, default: str) -> list[str]:
    chosen = [prefixes] if isinstance(prefixes, str) else list(prefixes or [default])
    return sorted({p.strip("/") + "/" if p.strip("/") else "" for p in chosen})


def _already_landed(conn, bucket: str, listed: list[tuple[str, str]]) -> set[tuple[str, str]]:
    if not listed:
        return set()
    keys, etags = zip(*listed)
    rows = conn.execute(
        "SELECT o.key, o.etag FROM extract.s3_object o"
        " JOIN unnest(%s::text[], %s::text[]) AS l(key, etag) ON o.key = l.key AND o.etag = l.etag"
        " WHERE o.bucket = %s",
        (list(keys), list(etags), bucket),
    ).fetchall()
    return {(k, e) for k, e in rows}


class _Landing:
    """One run: the batch being filled, the manifest rows it will confirm, and the counts."""

    def __init__(self, client, bucket: str, batch: LandingBatch) -> None:
        self.client, self.bucket, self.batch = client, bucket, batch
        self.fs, self.incoming = lakefs.resolve(batch.lake.incoming(SOURCE, batch.batch_id))
        self.manifest: list[tuple[str, str, str, int]] = []
        self.reasons: Counter[str] = Counter()
        self.landed_bytes = 0
        self.skipped_changed = 0
        self._used: set[str] = set()
        self._dir_ready = False

    def quarantine(self, key: str, etag: str, size: int, reason: str, detail: str, kept: str = "") -> None:
        """`detail` holds no card number (this module writes it; a digest in it is kept as it is)."""
        uri = f"s3://{self.bucket}/{key}"
        # the key is the sender's text: masked; the etag and the size are the store's
        detail = f"{mask_pans(uri)} (etag {etag}, {size} bytes): {detail}"
        self.batch.quarantine(reason, kept or uri, detail, detail_masked=True)
        self.manifest.append((self.bucket, key, etag, size))
        self.reasons[reason] += 1
        log.warning("quarantined as %s: %s", reason, detail)

    def land(self, key: str, etag: str, size: int, name: str) -> None:
        if size == 0:
            self.quarantine(key, etag, size, "empty_file", "the object has no bytes")
            return
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key, IfMatch=f'"{etag}"')["Body"]
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in VANISHED:
                raise
            self.skipped_changed += 1
            log.warning("%s changed or vanished since listing (%s): left for the next run",
                        mask_pans(f"s3://{self.bucket}/{key}"), code)
            return
        if not self._dir_ready:
            self.fs.create_dir(self.incoming, recursive=True)
            self._dir_ready = True
        name = _unique(name, key, self._used)
        check, written, path = None, 0, f"{self.incoming}/{name}"
        # compression=None: pyarrow would otherwise gzip a ".gz" path a second time
        with self.fs.open_output_stream(path, compression=None) as out:
            for chunk in body.iter_chunks(CHUNK):
                if check is None:
                    gzipped = name.lower().endswith(".gz") or chunk[:2] == GZIP_MAGIC
                    check = GzipCheck() if gzipped else False
                if check:
                    check.feed(chunk)
                out.write(chunk)
                written += len(chunk)
        if written != size:  # a cut connection, not bad data: fail the run so it is retried
            raise OSError(mask_pans(f"s3://{self.bucket}/{key}: received {written} of {size} bytes"))
        if check:
            error = check.finish()
            if error or check.inflated_bytes == 0:
                kept, digest = self._keep_masked_rendering(path, name)
                reason = "unreadable_file" if error else "empty_file"
                detail = f"{mask_pans(error or 'the gzip holds no bytes')}; sha256 {digest}; kept as a masked text rendering"
                self.quarantine(key, etag, size, reason, detail, kept)
                return
            if not name.lower().endswith(".gz"):
                self.fs.move(path, f"{path}.gz")
                name = f"{name}.gz"
        self.batch.files.append(name)
        self.manifest.append((self.bucket, key, etag, size))
        self.landed_bytes += written

    def _keep_masked_rendering(self, path: str, name: str) -> tuple[str, str]:
        """Write the masked text rendering of a received file into the quarantine zone and drop the
        bytes (see the module doc); returns where it went and the SHA-256 of the bytes."""
        masked = mask_pans(name)
        if masked != name:  # a card number in the sender's file name stays out of the quarantine zone
            name = re.sub(r"[^0-9A-Za-z._=-]", "_", masked)
        target_uri = (
            f"{self.batch.lake.quarantine(self.batch.ingest_date, 'extract')}/source={SOURCE}"
            f"/files/batch={self.batch.batch_id}/{name}{RENDERED_SUFFIX}"
        )
        fs, target = lakefs.resolve(target_uri)
        fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        digest = hashlib.sha256()
        with fs.open_output_stream(target, compression=None) as out:
            render = _MaskedRendering(out)
            inflate = GzipCheck(sink=render.write)
            with self.fs.open_input_stream(path, compression=None) as received:
                while chunk := received.read(CHUNK):
                    digest.update(chunk)
                    if not render.full:  # the rest of a bomb is hashed, never inflated again
                        inflate.feed(chunk)
            if inflate.inflated_bytes == 0:  # not gzip at all (or nothing in it): the bytes themselves, as text
                with self.fs.open_input_stream(path, compression=None) as received:
                    while (chunk := received.read(CHUNK)) and not render.full:
                        render.write(chunk)
            render.close()
        self.fs.delete_file(path)
        return target_uri, digest.hexdigest()

    def discard(self) -> None:
        if self.fs.get_file_info(self.incoming).type == pafs.FileType.Directory:
            self.fs.delete_dir(self.incoming)


def land_s3_files(
    ingest_date: str,
    aws_conn_id: str = "fluxo_s3",
    prefixes: str | Sequence[str] | None = None,
    bucket: str | None = None,
    conn=None,
) -> dict:
    """Land every object not landed yet under the prefixes as one batch of `ingest_date`; returns the counts."""
    settings = get_settings()
    bucket = bucket or settings.landing_bucket
    prefixes = _normalise_prefixes(prefixes, settings.landing_prefix)
    stream = ",".join(f"s3://{bucket}/{p}" for p in prefixes)
    hook = S3Hook(aws_conn_id=aws_conn_id)
    own_conn = conn is None
    conn = warehouse_connection() if own_conn else conn
    started = time.monotonic()
    lock = f"fluxo-extract-s3:{bucket}"
    try:
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (lock,))
        try:
            return _land(ingest_date, Lake(settings.lake_root), hook, conn, bucket, prefixes, stream, started)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (lock,))
    finally:
        if own_conn:
            conn.close()


def _land(ingest_date: str, lake: Lake, hook: S3Hook, conn, bucket: str, prefixes: list[str], stream: str, started: float) -> dict:
    listed_at = datetime.now(timezone.utc).isoformat()
    candidates, unsupported, keys = [], [], set()
    for prefix in prefixes:
        for obj in hook.list_keys(bucket_name=bucket, prefix=prefix, object_filter=_objects):
            key = obj["Key"]
            if key.endswith("/") or key in keys:  # a folder marker, or listed under an overlapping prefix
                continue
            keys.add(key)
            name = raw_name(key, prefix)
            if not name.lower().endswith(LANDABLE_SUFFIXES):
                unsupported.append(key)
                continue
            candidates.append((key, obj["ETag"].strip('"'), int(obj["Size"]), name))
    seen = _already_landed(conn, bucket, [(k, e) for k, e, _, _ in candidates])
    new = [c for c in candidates if (c[0], c[1]) not in seen]
    if unsupported:
        log.warning("skipped %d objects that are not CSV/JSON: %s", len(unsupported), mask_pans(str(unsupported[:10])))

    batch = LandingBatch(lake, SOURCE, ingest_date)
    landing = _Landing(hook.get_conn(), bucket, batch)
    try:
        for key, etag, size, name in new:
            landing.land(key, etag, size, name)
        batch.publish()
    finally:
        landing.discard()  # what publish did not move: a failed run's partial files, or an empty folder
    counts = {
        "listed": len(keys),
        "files": len(batch.files),
        "landed_bytes": landing.landed_bytes,
        "quarantined": len(batch.quarantined),
        "quarantine_by_reason": dict(landing.reasons),
        "skipped_seen": len(candidates) - len(new),
        "skipped_unsupported": len(unsupported),
        "skipped_changed": landing.skipped_changed,
    }
    ExtractState(conn).confirm(
        batch, stream=stream, watermark={"last_listed": listed_at, "objects_listed": len(keys)},
        counts=counts, s3_objects=landing.manifest,
    )
    elapsed = time.monotonic() - started
    log.info(
        "batch %s: %d files (%.1f MB) landed in %.1fs, %d quarantined, %d already landed, %d unsupported, %d changed",
        batch.batch_id, counts["files"], landing.landed_bytes / 1e6, elapsed, counts["quarantined"],
        counts["skipped_seen"], counts["skipped_unsupported"], counts["skipped_changed"],
    )
    return {"batch_id": batch.batch_id, "raw_path": batch.raw_path, **counts}
