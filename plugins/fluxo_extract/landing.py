"""Landing a batch in the raw zone, then confirming it in the durable extraction state.

Every extractor follows the same order, so nothing is lost and nothing doubles downstream:

1. write the batch's files under `raw/_incoming/<source>/batch=B/`;
2. publish them to `raw/<source>/ingest_date=D/batch=B/` (a rename on a local lake);
3. in ONE warehouse transaction, record the batch and advance the watermark/offsets;
4. only then acknowledge the source (commit Kafka offsets).

A crash between 2 and 3 re-extracts the same records next time; they land again in a
new batch and the curate stage keeps one row per transaction_id. Records that cannot be
read go to `quarantine/ingest_date=D/stage=extract/source=S/batch=B.jsonl` with a reason;
people read quarantine, so every card number in the record and the detail is masked here
(`fluxo.tokenize.mask_pans`), whatever the extractor passes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow.fs as pafs

from fluxo_platform import lakefs
from fluxo.lake import Lake
from fluxo.tokenize import mask_pans


def new_batch_id(source: str) -> str:
    return f"{source}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


@dataclass
class LandingBatch:
    lake: Lake
    source: str
    ingest_date: str
    batch_id: str = ""
    files: list[str] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    landed_records: int = 0

    def __post_init__(self) -> None:
        self.batch_id = self.batch_id or new_batch_id(self.source)

    @property
    def raw_path(self) -> str:
        return self.lake.raw(self.source, self.ingest_date, self.batch_id)

    @property
    def _incoming(self) -> str:
        return self.lake.incoming(self.source, self.batch_id)

    def write(self, name: str, data: bytes, records: int = 0) -> None:
        """Add one file (as received from the source) to the batch."""
        lakefs.write_bytes(f"{self._incoming}/{name}", data)
        self.files.append(name)
        self.landed_records += records

    def open(self, name: str, records: int = 0):
        """A stream for one large file of the batch (written as is; the caller closes it)."""
        self.files.append(name)
        self.landed_records += records
        return lakefs.open_output(f"{self._incoming}/{name}")

    def quarantine(self, reason: str, raw: bytes | str, detail: str = "", *, detail_masked: bool = False) -> None:
        """`detail_masked`: the caller masked the detail's untrusted parts itself, so that the digests it
        computed (hex, which may hold a Luhn-valid run of digits) stay as they are."""
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
        self.quarantined.append(
            {"source": self.source, "batch_id": self.batch_id, "reason": reason,
             "detail": detail if detail_masked else mask_pans(detail),
             "raw_record": mask_pans(text), "quarantined_at": datetime.now(timezone.utc).isoformat()}
        )

    def publish(self) -> dict:
        """Move the files into the raw zone and write the extraction quarantine; returns the counts."""
        if self.files:
            fs, src = lakefs.resolve(self._incoming)
            _, dest = lakefs.resolve(self.raw_path)
            if isinstance(fs, pafs.LocalFileSystem):
                fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
                fs.move(src, dest)
            else:  # object stores have no directory rename: copy, then drop the incoming copies
                for name in self.files:
                    fs.copy_file(f"{src}/{name}", f"{dest}/{name}")
                fs.delete_dir(src)
        if self.quarantined:
            body = "\n".join(json.dumps(q, ensure_ascii=False) for q in self.quarantined) + "\n"
            target = f"{self.lake.quarantine(self.ingest_date, 'extract')}/source={self.source}/{self.batch_id}.jsonl"
            lakefs.write_bytes(target, body.encode())
        return self.counts

    @property
    def counts(self) -> dict:
        return {"files": len(self.files), "landed": self.landed_records, "quarantined": len(self.quarantined)}


class ExtractState:
    """Watermarks and landed batches in the warehouse (`extract` schema); `conn` is a psycopg 3 connection."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def watermark(self, source: str, stream: str) -> dict | None:
        row = self.conn.execute(
            "SELECT value FROM extract.watermark WHERE source = %s AND stream = %s", (source, stream)
        ).fetchone()
        return row[0] if row else None

    def confirm(self, batch: LandingBatch, stream: str, watermark: dict | None, counts: dict | None = None,
                s3_objects: list[tuple[str, str, str, int]] = ()) -> None:
        """Record the landed batch and advance the watermark in one transaction."""
        counts = {**batch.counts, **(counts or {})}
        with self.conn.transaction():
            self.conn.execute(
                "INSERT INTO extract.batch (batch_id, source, stream, ingest_date, raw_path, counts)"
                " VALUES (%s, %s, %s, %s, %s, %s::jsonb)",
                (batch.batch_id, batch.source, stream, batch.ingest_date, batch.raw_path, json.dumps(counts)),
            )
            for bucket, key, etag, size in s3_objects:
                self.conn.execute(
                    "INSERT INTO extract.s3_object (bucket, key, etag, size, batch_id) VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    (bucket, key, etag, size, batch.batch_id),
                )
            if watermark is not None:
                self.conn.execute(
                    "INSERT INTO extract.watermark (source, stream, value, batch_id) VALUES (%s, %s, %s::jsonb, %s)"
                    " ON CONFLICT (source, stream) DO UPDATE SET value = EXCLUDED.value,"
                    " batch_id = EXCLUDED.batch_id, updated_at = now()",
                    (batch.source, stream, json.dumps(watermark, default=str), batch.batch_id),
                )
