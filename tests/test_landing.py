"""The landing protocol shared by every extractor: incoming -> raw zone -> confirmed state."""

from __future__ import annotations

import gzip
import json

import psycopg
import pytest

from fluxo_platform import lakefs
from fluxo.lake import Lake
from fluxo_extract.landing import ExtractState, LandingBatch


def test_publish_moves_files_bytes_intact_and_writes_quarantine(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    batch = LandingBatch(lake, "api", "2026-11-26")
    body = gzip.compress(b'{"a": 1}\n')
    batch.write("page-0001.json.gz", body, records=1)
    with batch.open("page-0002.json", records=2) as out:
        out.write(b'{"data": [1, 2]}')
    batch.quarantine("malformed_record", b'{"data": [', "truncated page")
    assert not lakefs.exists(batch.raw_path), "nothing is visible in the raw zone before publish"

    counts = batch.publish()

    assert counts == {"files": 2, "landed": 3, "quarantined": 1}
    landed = tmp_path / "lake" / "raw" / "api" / "ingest_date=2026-11-26" / f"batch={batch.batch_id}"
    assert (landed / "page-0001.json.gz").read_bytes() == body, "a .gz file must not be compressed again"
    assert (landed / "page-0002.json").read_bytes() == b'{"data": [1, 2]}'
    assert not (tmp_path / "lake" / "raw" / "_incoming" / "api" / f"batch={batch.batch_id}").exists()
    quarantined = (tmp_path / "lake" / "quarantine" / "ingest_date=2026-11-26" / "stage=extract"
                   / "source=api" / f"{batch.batch_id}.jsonl").read_text().splitlines()
    assert [json.loads(q)["reason"] for q in quarantined] == ["malformed_record"]


def test_confirm_records_the_batch_and_the_watermark_in_one_transaction(tmp_path, warehouse_url):
    lake = Lake(str(tmp_path / "lake"))
    first, second = LandingBatch(lake, "db", "2026-11-26"), LandingBatch(lake, "db", "2026-11-26")
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        state = ExtractState(conn)
        state.confirm(first, "test.landing", {"updated_at": "2026-11-26T10:00:00+00:00", "id": 7})
        with pytest.raises(psycopg.errors.UniqueViolation):
            # the same batch twice: the batch row clashes, so the watermark must not move either
            state.confirm(first, "test.landing", {"updated_at": "2099-01-01T00:00:00+00:00", "id": 1})
        assert state.watermark("db", "test.landing") == {"updated_at": "2026-11-26T10:00:00+00:00", "id": 7}
        state.confirm(second, "test.landing", {"updated_at": "2026-11-26T11:00:00+00:00", "id": 9})
        assert state.watermark("db", "test.landing")["id"] == 9
        conn.execute("DELETE FROM extract.watermark WHERE stream = 'test.landing'")
        conn.execute("DELETE FROM extract.batch WHERE stream = 'test.landing'")
