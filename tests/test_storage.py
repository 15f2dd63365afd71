"""A stage's local copy of lake folders on S3 (GX Data Docs and results): what changed goes back,
nothing else is uploaded again, and a failed block changes nothing."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from fluxo import storage


@pytest.fixture()
def site(stack_env) -> str:
    """A quality folder on the local S3 server with a docs site and a results store."""
    from fluxo_dev.stack.s3 import LAKE_BUCKET

    root = f"s3://{LAKE_BUCKET}/storage-tests-{uuid.uuid4().hex[:8]}/quality"
    for relative, text in {"docs/index.html": "index v1", "docs/day-1.html": "day 1", "docs/old.html": "old",
                           "results/day-1.json": "{}", "other/kept.txt": "not a child"}.items():
        storage.write_text(f"{root}/{relative}", text)
    return root


def modified(uri: str) -> float:
    fs, path = storage.filesystem(uri)
    return fs.get_file_info(path).mtime.timestamp()


def test_only_new_and_changed_files_go_back_and_deleted_ones_go(site):
    untouched_before = modified(f"{site}/results/day-1.json")
    time.sleep(1.1)  # S3 keeps modification times to the second
    with storage.local_copy(site, ("docs", "results")) as local:
        folder = Path(local)
        assert (folder / "docs" / "day-1.html").read_text() == "day 1"
        assert not (folder / "other").exists()
        (folder / "docs" / "index.html").write_text("index v2")
        (folder / "docs" / "day-2.html").write_text("day 2")
        (folder / "results" / "day-2.json").write_text("{}")
        os.remove(folder / "docs" / "old.html")
    assert storage.read_text(f"{site}/docs/index.html") == "index v2"
    assert storage.read_text(f"{site}/docs/day-2.html") == "day 2"
    assert storage.read_text(f"{site}/results/day-2.json") == "{}"
    assert storage.read_text(f"{site}/docs/day-1.html") == "day 1"
    assert not storage.exists(f"{site}/docs/old.html")
    assert storage.read_text(f"{site}/other/kept.txt") == "not a child"
    assert modified(f"{site}/results/day-1.json") == untouched_before  # not uploaded again


def test_a_block_that_fails_changes_nothing_on_s3(site):
    fs, path = storage.filesystem(site)
    before = sorted(info.path for info in fs.get_file_info(pafs.FileSelector(path, recursive=True)))
    with pytest.raises(RuntimeError, match="GX failed"):
        with storage.local_copy(site, ("docs", "results")) as local:
            (Path(local) / "docs" / "index.html").write_text("half written")
            os.remove(Path(local) / "docs" / "day-1.html")
            raise RuntimeError("GX failed")
    assert sorted(info.path for info in fs.get_file_info(pafs.FileSelector(path, recursive=True))) == before
    assert storage.read_text(f"{site}/docs/index.html") == "index v1"
