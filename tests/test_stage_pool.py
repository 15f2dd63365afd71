"""The stage pool: warm interpreters that run local Glue stages as `python script.py` would."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "plugins"))

from fluxo_platform import stage_pool  # noqa: E402
from tests.stage_runs import stage_pool as running_pool  # noqa: E402

# Records what a run saw; a preloaded module marked by one run must look unmarked to the next.
REPORT_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import fluxo.lake
    marked_before = hasattr(fluxo.lake, "marked_by")
    fluxo.lake.marked_by = os.getpid()
    print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "name": __name__,
                      "path0": sys.path[0], "pid": os.getpid(), "preloaded": "fluxo.lake" in sys.modules,
                      "marked_before": marked_before}))
    print("a line on stderr", file=sys.stderr)
    sys.exit(int(os.environ.get("EXIT_WITH", "0")))
    """
)
CRASH_SCRIPT = "raise RuntimeError('spark session died')\n"
SLEEP_SCRIPT = "import time\nprint('started', flush=True)\ntime.sleep(120)\n"


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool_scripts")
    (folder / "helper.py").write_text("VALUE = 1\n")
    (folder / "uses_helper.py").write_text("import sys\nimport helper\nprint(helper.VALUE, 'helper' in sys.modules)\n")
    (folder / "report.py").write_text(REPORT_SCRIPT)
    (folder / "crash.py").write_text(CRASH_SCRIPT)
    (folder / "sleep.py").write_text(SLEEP_SCRIPT)
    time.sleep(0.1)  # written before the pool starts: an interpreter importing a file written as it starts is not used
    return folder


@pytest.fixture(scope="module")
def pool(scripts):
    with running_pool(scripts) as socket_path:
        yield socket_path


def _run(pool, script: Path, env: dict, cwd: Path, *args: str) -> tuple[int, str, str, int]:
    run = stage_pool.start_run(pool, [str(script), *args], env, str(cwd))
    assert run is not None, "the pool had no interpreter for the run"
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(run.stderr))
    reader.start()
    out = "".join(run.stdout)
    code = run.wait()
    reader.join()
    return code, out, "".join(err), run.pid


def _env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT), **extra}


def test_a_run_gets_its_own_command_line_environment_folder_and_output(pool, scripts, tmp_path):
    code, out, err, pid = _run(pool, scripts / "report.py", _env(FLUXO_LAKE_ROOT="s3://lake/x"), tmp_path, "--ingest_date", "2026-11-21")
    seen = json.loads(out)
    assert code == 0 and err == "a line on stderr\n"
    assert seen["argv"] == [str(scripts / "report.py"), "--ingest_date", "2026-11-21"]
    assert seen["cwd"] == str(tmp_path) and seen["path0"] == str(scripts) and seen["name"] == "__main__"
    assert seen["env"] == _env(FLUXO_LAKE_ROOT="s3://lake/x")  # nothing of the pool's own environment
    assert seen["preloaded"] and seen["pid"] == pid


def test_every_run_is_a_fresh_interpreter_and_keeps_its_exit_status(pool, scripts, tmp_path):
    first = _run(pool, scripts / "report.py", _env(), tmp_path)
    second = _run(pool, scripts / "report.py", _env(EXIT_WITH="3"), tmp_path)
    assert first[0] == 0 and second[0] == 3
    assert first[3] != second[3]
    assert not json.loads(first[1])["marked_before"] and not json.loads(second[1])["marked_before"]


def test_an_uncaught_exception_exits_1_with_its_traceback(pool, scripts, tmp_path):
    code, _, err, _ = _run(pool, scripts / "crash.py", _env(), tmp_path)
    assert code == 1 and "Traceback" in err and "RuntimeError: spark session died" in err


def _alive(pid: int) -> bool:
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:"))
    except FileNotFoundError:
        return False
    return "\tZ" not in state


def test_a_run_is_stopped_by_its_process_group_or_when_its_caller_goes(pool, scripts, tmp_path):
    run = stage_pool.start_run(pool, [str(scripts / "sleep.py")], _env(), str(tmp_path))
    assert run.stdout.readline() == "started\n"
    assert os.getpgid(run.pid) == run.pid  # a session of its own, as a stage process has
    os.killpg(run.pid, signal.SIGTERM)  # what the operator's on_kill does
    assert run.wait() == -signal.SIGTERM

    abandoned = stage_pool.start_run(pool, [str(scripts / "sleep.py")], _env(), str(tmp_path))
    assert abandoned.stdout.readline() == "started\n"
    abandoned._conn.close()  # the task process died
    deadline = time.monotonic() + 15
    while _alive(abandoned.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(abandoned.pid)


def test_without_a_pool_the_caller_is_told_to_start_its_own_process(tmp_path):
    assert stage_pool.start_run(str(tmp_path / "no-pool.sock"), ["x.py"], _env(), str(tmp_path)) is None


def test_the_scripts_that_validate_with_great_expectations_get_interpreters_that_preloaded_it():
    kinds = stage_pool.script_kinds(str(REPO_ROOT / "glue_scripts"))
    assert sorted(kinds[stage_pool.GX]) == ["fraud.py", "quality_gate.py"]
    assert {"standardize.py", "curate.py", "outliers.py", "aggregate.py"} <= set(kinds[stage_pool.SPARK])


def test_an_edit_to_the_projects_code_after_the_pool_started_is_never_run_stale(pool, scripts, tmp_path):
    assert _run(pool, scripts / "uses_helper.py", _env(), tmp_path)[1] == "1 True\n"  # imported ahead
    time.sleep(0.2)  # the idle interpreter that replaced the first run's has started
    (scripts / "helper.py").write_text("VALUE = 2\n")
    time.sleep(0.2)
    # the interpreter holding the old module is not used: this run starts a process of its own ...
    assert stage_pool.start_run(pool, [str(scripts / "uses_helper.py")], _env(), str(tmp_path)) is None
    # ... and the fresh interpreter that replaces it has the new code
    assert _run(pool, scripts / "uses_helper.py", _env(), tmp_path)[1] == "2 True\n"
