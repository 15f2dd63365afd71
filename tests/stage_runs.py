"""Running Glue scripts from tests the way the operator runs them locally: subprocesses, one JVM
for several stages when a test runs a chain (`runpy` over each script in turn)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from fluxo.glue_runtime import ERROR_PREFIX

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "glue_scripts"
# Several scripts as __main__ one after another in one Python process (one JVM start).
_ONE_PROCESS = (
    "import json, runpy, sys\n"
    "for argv in json.loads(sys.argv[1]):\n"
    "    sys.argv = argv\n"
    "    runpy.run_path(argv[0], run_name='__main__')\n"
)


def stage_environment(**overrides: str) -> dict[str, str]:
    """This process's environment for a stage subprocess: the repo as the library, a small Spark."""
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        "FLUXO_SPARK_MASTER": "local[2]",
        "FLUXO_SPARK_SHUFFLE_PARTITIONS": "2",
        "FLUXO_SPARK_DRIVER_MEMORY": "1g",
        **overrides,
    })
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return env


def script_argv(script: str, **args: str) -> list[str]:
    """`glue_scripts/<script>.py --JOB_NAME <script> --name value ...`"""
    argv = [str(SCRIPTS / f"{script}.py"), "--JOB_NAME", script]
    for name, value in args.items():
        argv += [f"--{name}", str(value)]
    return argv


def start_stages(*argvs: list[str], cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _ONE_PROCESS, json.dumps(argvs)], cwd=cwd, env=env or stage_environment(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: int = 900) -> subprocess.CompletedProcess:
    """Wait for the stages; they must succeed."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0 and ERROR_PREFIX not in err, err[-3000:]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_stages(*argvs: list[str], cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return finish(start_stages(*argvs, cwd=cwd, env=env))


@contextlib.contextmanager
def stage_pool(scripts_dir: Path, size: int = 1):
    """The stack's stage pool (fluxo_platform.stage_pool) for the scripts of `scripts_dir`: its socket path."""
    from fluxo_dev.stack.credentials import Credentials
    from fluxo_dev.stack.stage_pool import StagePool

    home = Path(tempfile.mkdtemp(prefix="fxpool-"))
    pool = StagePool(home, Credentials(home), lambda message: None, environment=dict, scripts=scripts_dir, size=size)
    try:
        pool.ensure_running()
        yield str(pool.socket_path)
    finally:
        pool.stop()
        shutil.rmtree(home, ignore_errors=True)
