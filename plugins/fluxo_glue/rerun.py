"""Reruns of unchanged stages: what a Glue stage read, and whether it changed since its last success.

Before a stage starts, the operator takes the stage's **inputs fingerprint**: the code (the
fluxo library and the stage's script), the suites, the stage's arguments (all but the run id),
the results documents and inputs fingerprints of the stages it follows (so a change anywhere
upstream reaches every later stage), and what it reads from the lake itself: the raw
files of its ingest date (name, size, modification time) for a stage that reads raw, standardize's
results of every day for one that compares the day with recent days (the quality gate). A stage that
reads the curated Delta table also needs the table at the version it left it (any commit since,
another day's curate too, runs it again). After a successful run the operator stores the
fingerprint as the stage's **inputs record** (`Lake.stage_inputs`); the next run with the same
fingerprint and curated version skips the stage's work and returns the results it stored then.

Everything here reads the lake the way the Airflow worker does (`fluxo_platform.lakefs`: pyarrow,
delta-rs), so the check costs no Spark, locally and on AWS alike.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from fluxo.lake import Lake
from fluxo.sources import REGISTRY
from fluxo.tokenize import opaque_id
from fluxo_platform import glue_package, lakefs

RAW, CURATED = "raw", "curated"
# standardize's results of recent days (the quality gate judges a day's volume against them)
DAY_HISTORY = "day_history"
# Arguments that name a run, not what it reads.
_RUN_ARGUMENTS = ("--run_id", "--JOB_RUN_ID")


@dataclass(frozen=True)
class StageInputs:
    fingerprint: str
    curated_version: int | None  # None: the stage does not read curated (or no table yet)

    def unchanged_since(self, record: Mapping[str, Any] | None) -> bool:
        return bool(record) and record.get("fingerprint") == self.fingerprint and \
            record.get("curated_version") == self.curated_version


def _digest(parts: Iterable[Any]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return opaque_id(h.digest())


@functools.lru_cache(maxsize=None)
def _file_digest(path: Path, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_version(script: Path) -> str:
    """The library the job ships, its script and the suites it reads, as one digest."""
    files = [*glue_package.library_files(glue_package.LIBRARY_DIR),
             *glue_package.library_files(glue_package.EXPECTATIONS_DIR), script]
    return _digest((p.relative_to(glue_package.REPO_ROOT).as_posix(), _file_digest(p, p.stat().st_mtime_ns))
                   for p in sorted(files))


def raw_listing(lake: Lake, ingest_date: str) -> list[tuple[str, int, str]]:
    """(path, size, modified) of every raw file of the ingest date, every source."""
    found = []
    for source in REGISTRY:
        fs, base = lakefs.resolve(lake.raw(source, ingest_date))
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        found += [(info.path, info.size, str(info.mtime)) for info in fs.get_file_info(selector)
                  if info.type == pafs.FileType.File]
    return sorted(found)


def day_history_listing(lake: Lake, args: Mapping[str, str]) -> list[tuple[str, int, str]]:
    """(path, size, modified) of standardize's results documents the quality gate compares the day
    with: the days of its volume rule's window before the ingest date (a later day, or one older
    than the window, changes nothing the gate reads)."""
    from fluxo.quality.day import history_window, recent_stats_paths
    from fluxo.quality.suites import DEFAULT_SUITES, EXPECTATIONS_DIR, load_suites

    names = [n.strip() for n in args.get("--suites", ",".join(DEFAULT_SUITES)).split(",") if n.strip()]
    window_days, _ = history_window(load_suites(names, args.get("--expectations_root", EXPECTATIONS_DIR)))
    fs, base = lakefs.resolve(lake.work("stats"))
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    found = {info.path: info for info in fs.get_file_info(selector)
             if info.type == pafs.FileType.File and info.base_name == "standardize.json"}
    return [(path, found[path].size, str(found[path].mtime))
            for path in recent_stats_paths(list(found), args["--ingest_date"], window_days)]


def curated_version(lake: Lake) -> int | None:
    table = lakefs.open_delta(lake.curated_transactions)
    return None if table is None else table.version()


def stage_inputs(script: Path, args: Mapping[str, str], upstream: Iterable[str], reads: Iterable[str]) -> StageInputs:
    lake, ingest_date = Lake(args["--lake_root"]), args["--ingest_date"]
    reads = set(reads)
    arguments = {k: v for k, v in args.items() if k not in _RUN_ARGUMENTS}
    # an upstream stage's results, and what it read in turn (equal counts may come from other data)
    upstream_results = {stage: (lakefs.read_json(lake.stats(ingest_date, stage)),
                                (lakefs.read_json(lake.stage_inputs(ingest_date, stage)) or {}).get("fingerprint"))
                        for stage in sorted(upstream)}
    parts = [code_version(script), arguments, upstream_results,
             raw_listing(lake, ingest_date) if RAW in reads else None,
             day_history_listing(lake, args) if DAY_HISTORY in reads else None]
    return StageInputs(_digest(parts), curated_version(lake) if CURATED in reads else None)


def previous_run(args: Mapping[str, str], stage: str) -> dict[str, Any] | None:
    return lakefs.read_json(Lake(args["--lake_root"]).stage_inputs(args["--ingest_date"], stage))


def record_run(args: Mapping[str, str], stage: str, fingerprint: str, run_id: str | None,
               reads: Iterable[str]) -> None:
    """Store what a successful run read; a stage that reads curated records the version it left."""
    lake = Lake(args["--lake_root"])
    version = curated_version(lake) if CURATED in set(reads) else None
    record = {"fingerprint": fingerprint, "curated_version": version, "run_id": run_id,
              "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    lakefs.write_json(lake.stage_inputs(args["--ingest_date"], stage), record)
