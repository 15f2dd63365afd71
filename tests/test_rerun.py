"""A stage whose inputs did not change since its last successful run for the day is skipped; any
change to what it reads (raw files, upstream results, the curated table, code, suites, arguments)
or a full refresh runs it again. The operator runs stand-in scripts on a local lake, as in local mode."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "plugins"))

from fluxo_glue import FluxoGlueJobOperator  # noqa: E402
from fluxo_glue.rerun import CURATED, RAW  # noqa: E402

from fluxo.lake import Lake  # noqa: E402
from fluxo_platform import glue_package  # noqa: E402
from tests.airflow_stubs import TaskInstanceStub  # noqa: E402

DAY = "2024-03-05"
# Stands in for a stage: counts its runs, writes the same results document every time.
STAGE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    stage = os.path.basename(sys.argv[0])[:-3]
    with open(os.environ["FLUXO_RUNS_FILE"], "a") as f:
        f.write(stage + "\\n")
    stats = os.path.join(args["--lake_root"], "work", "stats", "ingest_date=" + args["--ingest_date"])
    os.makedirs(stats, exist_ok=True)
    with open(os.path.join(stats, stage + ".json"), "w") as f:
        json.dump({"rows": 3}, f)
    """
)


@pytest.fixture()
def lake(tmp_path, monkeypatch):
    scripts = tmp_path / "glue_scripts"
    scripts.mkdir()
    for stage in ("standardize", "quality_gate", "curate", "aggregate"):
        (scripts / f"{stage}.py").write_text(STAGE_SCRIPT)
    # the library and suites the fingerprint covers: copies this test may edit
    for name in ("LIBRARY_DIR", "EXPECTATIONS_DIR"):
        copy = tmp_path / name.lower()
        shutil.copytree(getattr(glue_package, name), copy, ignore=shutil.ignore_patterns("__pycache__"))
        monkeypatch.setattr(glue_package, name, copy)
    monkeypatch.setattr(glue_package, "REPO_ROOT", tmp_path)
    monkeypatch.setenv("FLUXO_GLUE_MODE", "local")
    monkeypatch.setenv("FLUXO_RUNS_FILE", str(tmp_path / "runs.txt"))
    monkeypatch.setenv("FLUXO_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.delenv("FLUXO_REPORTING_CURRENCY", raising=False)
    (tmp_path / "runs.txt").touch()
    return tmp_path


def run(lake_dir: Path, stage: str, after=(), reads=(), full_refresh=False) -> dict:
    op = FluxoGlueJobOperator(task_id=stage, script=stage, script_args={"--ingest_date": DAY},
                              scripts_dir=lake_dir / "glue_scripts", upstream_stages=after, reads=reads)
    context = {"ti": TaskInstanceStub(), "run_id": f"manual__{len(runs(lake_dir))}",
               "params": {"full_refresh": full_refresh}}
    return op.execute(context)


def runs(lake_dir: Path) -> list[str]:
    return (lake_dir / "runs.txt").read_text().split()


def add_raw_file(lake_dir: Path, name: str, text: str = "id\n1\n") -> None:
    folder = Path(Lake(str(lake_dir / "lake")).raw("s3", DAY, "b1"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def commit_to_curated(lake_dir: Path, n: int) -> None:
    from deltalake import write_deltalake

    write_deltalake(Lake(str(lake_dir / "lake")).curated_transactions, pa.table({"id": list(range(n))}), mode="append")


def test_a_stage_reading_raw_runs_again_only_when_its_inputs_change(lake, monkeypatch):
    add_raw_file(lake, "a.csv")
    first = run(lake, "standardize", reads=(RAW,))
    assert runs(lake) == ["standardize"] and not first.get("skipped")
    again = run(lake, "standardize", reads=(RAW,))
    assert runs(lake) == ["standardize"], "unchanged inputs: the stage must not run"
    assert again["skipped"] and again["stats"] == first["stats"] == {"rows": 3}
    assert again["skipped_reason"] == "inputs unchanged since run manual__0"

    add_raw_file(lake, "b.csv")  # a new raw file
    run(lake, "standardize", reads=(RAW,))
    add_raw_file(lake, "b.csv", "id\n1\n2\n")  # a raw file replaced
    run(lake, "standardize", reads=(RAW,))
    monkeypatch.setenv("FLUXO_REPORTING_CURRENCY", "USD")  # another argument
    run(lake, "standardize", reads=(RAW,))
    run(lake, "standardize", reads=(RAW,), full_refresh=True)  # a full refresh runs whatever the inputs
    assert len(runs(lake)) == 5
    assert run(lake, "standardize", reads=(RAW,))["skipped"]


def test_a_change_upstream_reaches_the_later_stages_even_with_equal_counts(lake):
    add_raw_file(lake, "a.csv")
    run(lake, "standardize", reads=(RAW,))
    run(lake, "quality_gate", after=("standardize",))
    assert run(lake, "quality_gate", after=("standardize",))["skipped"]
    add_raw_file(lake, "late.csv")
    run(lake, "standardize", reads=(RAW,))  # writes the very same results document
    assert not run(lake, "quality_gate", after=("standardize",)).get("skipped")
    assert runs(lake) == ["standardize", "quality_gate", "standardize", "quality_gate"]


def test_the_gate_runs_again_when_another_days_results_change(lake):
    from fluxo_glue.rerun import DAY_HISTORY

    add_raw_file(lake, "a.csv")
    run(lake, "standardize", reads=(RAW,))
    run(lake, "quality_gate", after=("standardize",), reads=(DAY_HISTORY,))
    assert run(lake, "quality_gate", after=("standardize",), reads=(DAY_HISTORY,))["skipped"]
    for day in ("2024-03-06", "2023-12-01"):  # a later day, a day older than the volume rule's window
        later = Path(Lake(str(lake / "lake")).stats(day, "standardize"))
        later.parent.mkdir(parents=True)
        later.write_text('{"read": 10}')
        assert run(lake, "quality_gate", after=("standardize",), reads=(DAY_HISTORY,))["skipped"], day
    other_day = Path(Lake(str(lake / "lake")).stats("2024-03-04", "standardize"))
    other_day.parent.mkdir(parents=True)
    other_day.write_text('{"read": 10}')  # a recent day the volume rule compares with
    assert not run(lake, "quality_gate", after=("standardize",), reads=(DAY_HISTORY,)).get("skipped")


def test_a_stage_reading_curated_runs_again_after_any_commit_code_or_suite_change(lake):
    commit_to_curated(lake, 3)
    run(lake, "curate", reads=(CURATED,))
    commit_to_curated(lake, 1)  # what curate itself commits is recorded after its run: stand for it
    run(lake, "curate", reads=(CURATED,))
    assert run(lake, "curate", reads=(CURATED,))["skipped"]
    run(lake, "aggregate", after=("curate",), reads=(CURATED,))
    assert run(lake, "aggregate", after=("curate",), reads=(CURATED,))["skipped"]
    assert runs(lake) == ["curate", "curate", "aggregate"]

    commit_to_curated(lake, 2)  # another day's curate (a late arrival) changed the table
    run(lake, "aggregate", after=("curate",), reads=(CURATED,))
    suite = next((lake / "expectations_dir").glob("*.json"))
    suite.write_text(json.dumps({**json.loads(suite.read_text()), "notes": "threshold tuned"}))
    run(lake, "aggregate", after=("curate",), reads=(CURATED,))
    module = lake / "library_dir" / "contract.py"
    module.write_text(module.read_text() + "\n# a code change\n")
    run(lake, "aggregate", after=("curate",), reads=(CURATED,))
    assert runs(lake).count("aggregate") == 4
    assert run(lake, "aggregate", after=("curate",), reads=(CURATED,))["skipped"]


def test_an_operator_not_told_what_its_stage_reads_always_runs_it(lake):
    run(lake, "standardize")
    run(lake, "standardize")
    assert runs(lake) == ["standardize", "standardize"]
