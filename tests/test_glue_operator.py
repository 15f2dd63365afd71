"""FluxoGlueJobOperator in both modes, and the Glue packaging/deploy command.

AWS mode runs against moto's real HTTP server (Glue + S3). Moto never executes
a Glue job: its job runs move STARTING -> RUNNING -> SUCCEEDED as they are
polled (we make it one step per poll, so the operator really waits). Moto 5.2.5
also lacks Glue UpdateJob; `moto_server` adds a minimal one (the job definition
is replaced by JobUpdate, as AWS does) so the update path goes over HTTP too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from importlib import metadata
from pathlib import Path

import boto3
import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "plugins"))

from airflow.providers.common.compat.sdk import AirflowException  # noqa: E402
from fluxo_glue import FluxoGlueJobOperator  # noqa: E402

from fluxo_platform import glue_package  # noqa: E402
from fluxo_platform.settings import FluxoSettings  # noqa: E402
from tests.airflow_stubs import TaskInstanceStub  # noqa: E402
from tests.stage_runs import stage_pool  # noqa: E402

STAGES = ("standardize", "quality_gate", "curate", "aggregate")
REGION = "us-east-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/fluxo-glue-test"

# Stands in for a Glue script: records the arguments and environment it got.
ECHO_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    print("standardizing", len(sys.argv) - 1, "arguments")
    print("spark warning on stderr", file=sys.stderr)
    with open(os.environ["FLUXO_ECHO_FILE"], "w") as f:
        json.dump({"argv": sys.argv[1:], "env": sorted(os.environ), "cwd": os.getcwd(), "parent": os.getppid()}, f)
    """
)
FAILING_SCRIPT = textwrap.dedent(
    """
    import sys
    print("reading raw batch")
    print("Traceback (most recent call last): ...", file=sys.stderr)
    print("FLUXO_ERROR: raw batch 2024-03-05 has no rows for source api", file=sys.stderr)
    sys.exit(1)
    """
)
CRASHING_SCRIPT = "raise RuntimeError('spark session died')\n"


def _context() -> dict:
    return {"ti": TaskInstanceStub(), "ds": "2024-03-05", "run_id": "manual__2024-03-05T00:00:00+00:00"}


def _operator(scripts_dir: Path, **kwargs) -> FluxoGlueJobOperator:
    op = FluxoGlueJobOperator(
        task_id="standardize",
        script="standardize",
        script_args={"--lake_root": "s3://fluxo-lake/lake", "--ingest_date": "{{ ds }}", "--batch_limit": 500},
        scripts_dir=scripts_dir,
        job_poll_interval=0.1,
        **kwargs,
    )
    op.render_template_fields(_context())
    return op


@pytest.fixture()
def scripts_dir(tmp_path):
    folder = tmp_path / "glue_scripts"
    folder.mkdir()
    for stage in STAGES:
        (folder / f"{stage}.py").write_text(ECHO_SCRIPT)
    return folder


@pytest.fixture()
def echo_file(tmp_path, monkeypatch):
    path = tmp_path / "echo.json"
    monkeypatch.setenv("FLUXO_ECHO_FILE", str(path))
    return path


# --- local mode -------------------------------------------------------------


@pytest.fixture(scope="module")
def warm_pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pooled_scripts")
    (folder / "standardize.py").write_text(ECHO_SCRIPT)
    with stage_pool(folder) as socket_path:
        yield socket_path


@pytest.fixture(params=["process", "stage_pool"])
def local_runner(request, monkeypatch, tmp_path):
    """Where a local run happens: a process of its own (no pool answers), or a warm interpreter of the stage pool."""
    monkeypatch.setenv("FLUXO_GLUE_MODE", "local")
    pool = request.getfixturevalue("warm_pool") if request.param == "stage_pool" else str(tmp_path / "no-pool.sock")
    monkeypatch.setenv("FLUXO_STAGE_POOL", pool)
    return request.param


def test_local_mode_runs_script_with_glue_arguments(scripts_dir, echo_file, local_runner, monkeypatch):
    monkeypatch.setenv("FLUXO_GLUE_JOB_PREFIX", "fluxo-dev-")
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://secret")

    monkeypatch.setenv("FLUXO_REPORTING_CURRENCY", "usd")
    context = _context()
    result = _operator(scripts_dir).execute(context)

    recorded = json.loads(echo_file.read_text())
    # the settings' stage arguments first (the DAG's own win), then the run's id as a path segment
    assert recorded["argv"] == [
        "--JOB_NAME", "fluxo-dev-standardize",
        "--lake_root", "s3://fluxo-lake/lake",
        "--reporting_currency", "USD",
        "--expectations_root", str(REPO_ROOT / "expectations"),
        "--ingest_date", "2024-03-05",
        "--batch_limit", "500",
        "--run_id", "manual__2024-03-05T00_00_00_00_00",
    ]
    assert "FLUXO_ECHO_FILE" in recorded["env"] and "PATH" in recorded["env"]
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in recorded["env"]
    assert Path(recorded["cwd"]).resolve() != REPO_ROOT
    # a process of its own is this one's child; a pooled interpreter is the pool's
    assert (recorded["parent"] == os.getpid()) == (local_runner == "process")
    assert result["job_name"] == "fluxo-dev-standardize"
    assert result["mode"] == "local" and result["glue_run_id"] is None and result["stats"] is None
    assert 0 < result["duration_s"] < 60
    assert context["ti"].xcom["glue_job_run_details"] == {}  # no console page, and no "XCom not found" error


def test_local_mode_failure_carries_fluxo_error(scripts_dir, local_runner):
    (scripts_dir / "standardize.py").write_text(FAILING_SCRIPT)

    with pytest.raises(AirflowException) as exc:
        _operator(scripts_dir).execute(_context())

    message = str(exc.value)
    assert "raw batch 2024-03-05 has no rows for source api" in message
    assert "exit 1" in message and "Traceback" not in message


def test_local_mode_failure_without_fluxo_error_shows_stderr_tail(scripts_dir, local_runner):
    (scripts_dir / "standardize.py").write_text(CRASHING_SCRIPT)

    with pytest.raises(AirflowException, match="RuntimeError: spark session died"):
        _operator(scripts_dir).execute(_context())


def test_missing_script_fails_before_running(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUXO_GLUE_MODE", "local")
    with pytest.raises(AirflowException, match="Glue script not found"):
        _operator(tmp_path).execute(_context())


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\tZ" not in next(line for line in status.read_text().splitlines() if line.startswith("State:"))
    except FileNotFoundError:
        return False


def test_on_kill_stops_the_local_run_and_its_children(scripts_dir, echo_file, local_runner):
    (scripts_dir / "standardize.py").write_text(textwrap.dedent(
        """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        with open(os.environ["FLUXO_ECHO_FILE"], "w") as f:
            f.write(str(child.pid))
        time.sleep(120)
        """
    ))
    op = _operator(scripts_dir)
    failure: list[BaseException] = []

    def run():
        try:
            op.execute(_context())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 60
    while not (echo_file.exists() and echo_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(echo_file.read_text())
    op.on_kill()
    runner.join(timeout=30)

    assert not runner.is_alive()
    assert failure and isinstance(failure[0], AirflowException) and "exit -15" in str(failure[0])
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


# --- AWS mode against moto's HTTP server ---------------------------------------


def _moto_update_job(self):
    """Glue UpdateJob for moto 5.2.5 (not implemented there): JobUpdate replaces the definition."""
    from moto.core.responses import ActionResult

    name = self._get_param("JobName")
    update = self._get_param("JobUpdate")
    job = self.glue_backend.get_job(name)
    fields = {
        "Description": "description", "LogUri": "log_uri", "Role": "role", "Command": "command",
        "ExecutionProperty": "execution_property", "DefaultArguments": "default_arguments",
        "MaxRetries": "max_retries", "Timeout": "timeout", "GlueVersion": "glue_version",
        "WorkerType": "worker_type", "NumberOfWorkers": "number_of_workers",
    }
    for key, attr in fields.items():
        setattr(job, attr, update.get(key))
    _moto_update_job.calls.append(name)
    return ActionResult({"JobName": name})


_moto_update_job.calls = []


@pytest.fixture(scope="module")
def moto_server():
    from moto.glue.responses import GlueResponse
    from moto.server import ThreadedMotoServer

    patch = pytest.MonkeyPatch()
    patch.setattr(GlueResponse, "update_job", _moto_update_job, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    patch.undo()


@pytest.fixture()
def aws(moto_server, monkeypatch):
    """AWS mode settings pointing at moto (fake credentials, development only)."""
    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
    # one state per poll: STARTING -> RUNNING -> SUCCEEDED
    requests.post(
        f"{moto_server}/moto-api/state-manager/set-transition",
        json={"model_name": "glue::job_run", "transition": {"progression": "manual", "times": 1}},
        timeout=10,
    )
    _moto_update_job.calls.clear()
    env = {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws"}),
        "FLUXO_GLUE_MODE": "aws",
        "FLUXO_AWS_REGION": REGION,
        "FLUXO_GLUE_ARTIFACTS_BUCKET": "fluxo-glue-test",
        "FLUXO_GLUE_ROLE": ROLE_ARN,
        "FLUXO_GLUE_WORKER_TYPE": "G.2X",
        "FLUXO_GLUE_NUMBER_OF_WORKERS": "3",
        "FLUXO_GLUE_JOB_PREFIX": "fluxo-test-",
        "FLUXO_S3_ENDPOINT": moto_server,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    clients = {name: boto3.client(name, region_name=REGION) for name in ("glue", "s3")}
    clients["s3"].create_bucket(Bucket="fluxo-glue-test")
    return clients


def _s3_keys(s3) -> set[str]:
    return {obj["Key"] for obj in s3.list_objects_v2(Bucket="fluxo-glue-test").get("Contents", [])}


def test_aws_mode_creates_job_uploads_artifacts_and_awaits_run(aws, scripts_dir, echo_file, monkeypatch):
    context = _context()
    result = _operator(scripts_dir).execute(context)

    job = aws["glue"].get_job(JobName="fluxo-test-standardize")["Job"]
    assert job["GlueVersion"] == "6.0"
    assert job["Command"] == {
        "Name": "glueetl",
        "ScriptLocation": "s3://fluxo-glue-test/scripts/standardize.py",
        "PythonVersion": "3",
    }
    assert (job["Role"], job["WorkerType"], job["NumberOfWorkers"]) == (ROLE_ARN, "G.2X", 3)
    assert "MaxCapacity" not in job
    defaults = job["DefaultArguments"]
    assert defaults["--extra-py-files"] == "s3://fluxo-glue-test/libs/fluxo-0.1.0.zip"
    assert defaults["--additional-python-modules"] == "great_expectations==1.24.1"
    assert defaults["--datalake-formats"] == "delta"
    assert defaults["--conf"] == (
        "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension"
        " --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog"
        " --conf spark.delta.logStore.s3.impl=io.fluxo.delta.S3ConditionalPutLogStore"
        " --conf spark.delta.logStore.s3a.impl=io.fluxo.delta.S3ConditionalPutLogStore"
    )
    assert defaults["--extra-jars"] == "s3://fluxo-glue-test/jars/fluxo-delta-logstore.jar"
    assert defaults["--enable-metrics"] == "true"
    assert defaults["--enable-continuous-cloudwatch-log"] == "true"
    assert defaults["--job-language"] == "python"

    keys = _s3_keys(aws["s3"])
    assert {"scripts/standardize.py", "libs/fluxo-0.1.0.zip", "jars/fluxo-delta-logstore.jar",
            "expectations/transactions_contract.json"} <= keys
    uploaded = aws["s3"].get_object(Bucket="fluxo-glue-test", Key="scripts/standardize.py")["Body"].read()
    assert uploaded.decode() == ECHO_SCRIPT

    runs = aws["glue"].get_job_runs(JobName="fluxo-test-standardize")["JobRuns"]
    assert len(runs) == 1 and runs[0]["JobRunState"] == "SUCCEEDED"
    run_args = runs[0]["Arguments"]
    assert run_args["--ingest_date"] == "2024-03-05"
    assert run_args["--lake_root"] == "s3://fluxo-lake/lake"
    assert run_args["--expectations_root"] == "s3://fluxo-glue-test/expectations/"
    assert result == {
        "job_name": "fluxo-test-standardize",
        "mode": "aws",
        "duration_s": result["duration_s"],
        "glue_run_id": runs[0]["Id"],
        "stats": None,  # moto runs no script, so no results document
    }
    assert context["ti"].xcom["glue_job_run_id"] == runs[0]["Id"]

    # The same DAG task in local mode hands the script exactly the run's own arguments.
    monkeypatch.setenv("FLUXO_GLUE_MODE", "local")
    _operator(scripts_dir).execute(_context())
    argv = json.loads(echo_file.read_text())["argv"]
    local_args = dict(zip(argv[::2], argv[1::2]))
    assert local_args.pop("--JOB_NAME") == "fluxo-test-standardize"
    run_only = {k: v for k, v in run_args.items() if k not in defaults}
    # only where the suites are read from differs: the checkout's folder, or their uploaded copy
    assert local_args.pop("--expectations_root") == str(REPO_ROOT / "expectations")
    run_only.pop("--expectations_root")
    assert local_args == run_only


def test_aws_mode_failure_surfaces_glue_error_message(aws, scripts_dir, monkeypatch):
    from moto.glue.models import FakeJobRun

    reported = FakeJobRun.as_dict

    def failed_run(self):  # moto cannot fail a run; report what Glue reports for one
        return {**reported(self), "JobRunState": "FAILED", "ErrorMessage": "FLUXO_ERROR: no raw rows"}

    monkeypatch.setattr(FakeJobRun, "as_dict", failed_run)
    with pytest.raises(AirflowException, match="failed: FAILED: FLUXO_ERROR: no raw rows"):
        _operator(scripts_dir).execute(_context())


def test_deploy_creates_every_job_and_is_idempotent(aws, scripts_dir, monkeypatch, capsys):
    glue, s3 = aws["glue"], aws["s3"]
    names = {f"fluxo-test-{stage}" for stage in STAGES}

    assert glue_package.deploy(FluxoSettings(), scripts_dir) == {n: "created" for n in names}
    assert {j["Name"] for j in glue.get_jobs()["Jobs"]} == names
    assert {f"scripts/{s}.py" for s in STAGES} | {"libs/fluxo-0.1.0.zip"} <= _s3_keys(s3)
    assert "job fluxo-test-curate: created" in capsys.readouterr().out

    assert glue_package.deploy(FluxoSettings(), scripts_dir) == {n: "unchanged" for n in names}
    assert _moto_update_job.calls == []

    monkeypatch.setenv("FLUXO_GLUE_NUMBER_OF_WORKERS", "5")
    actions = glue_package.deploy(FluxoSettings(), scripts_dir)
    assert actions == {n: "updated (NumberOfWorkers)" for n in names}
    jobs = glue.get_jobs()["Jobs"]
    assert len(jobs) == len(STAGES)
    assert {j["NumberOfWorkers"] for j in jobs} == {5}
    assert {j["GlueVersion"] for j in jobs} == {"6.0"}

    # The operator builds the very definition deploy wrote: running it updates nothing.
    _moto_update_job.calls.clear()
    _operator(scripts_dir).execute(_context())
    assert _moto_update_job.calls == []
    assert len(glue.get_job_runs(JobName="fluxo-test-standardize")["JobRuns"]) == 1


def test_cli_deploy_ships_the_repo_scripts(aws):
    done = subprocess.run(
        [sys.executable, "-m", "fluxo_platform.glue_package", "deploy"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    expected = {f"fluxo-test-{s}" for s in glue_package.script_names()}
    assert expected, "no glue_scripts/*.py to deploy"
    assert {j["Name"] for j in aws["glue"].get_jobs()["Jobs"]} == expected
    assert "uploaded fluxo-0.1.0.zip -> s3://fluxo-glue-test/libs/fluxo-0.1.0.zip" in done.stdout


DAG_FILE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG
    from fluxo_glue import FluxoGlueJobOperator

    with DAG("fluxo_glue_smoke", schedule=None, start_date=pendulum.datetime(2024, 3, 1, tz="UTC")):
        FluxoGlueJobOperator(
            task_id="standardize",
            script="standardize",
            script_args={{"--lake_root": "s3://fluxo-lake/lake", "--ingest_date": "{{{{ ds }}}}"}},
            scripts_dir={scripts_dir!r},
            job_poll_interval=0.5,
        )
    """
)


def test_dag_runs_the_operator_through_the_airflow_task_runtime(aws, scripts_dir, tmp_path):
    """`airflow dags test` with plugins/ as the plugins folder: templating, task state, XCom."""
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "smoke.py").write_text(DAG_FILE.format(scripts_dir=str(scripts_dir)))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        # the repo's own plugins folder, with its .airflowignore (the loader must not import operator.py)
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    airflow = [sys.executable, "-m", "airflow"]
    migrated = subprocess.run([*airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    done = subprocess.run(
        [*airflow, "dags", "test", "fluxo_glue_smoke", "2024-03-05"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert "Glue job fluxo-test-standardize (aws mode) succeeded" in output, output[-5000:]
    runs = aws["glue"].get_job_runs(JobName="fluxo-test-standardize")["JobRuns"]
    assert [r["Arguments"]["--ingest_date"] for r in runs] == ["2024-03-05"]


# --- the library zip --------------------------------------------------------


_IMPORT_CHECK = textwrap.dedent(
    """
    import importlib, importlib.abc, json, sys
    zip_path, modules, repo_root = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    # No repo and no editable install: only the zip provides fluxo.
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
    sys.path[:] = [p for p in sys.path if p not in ("", ".", repo_root)]

    class NotOnGlue(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("pydantic_settings", "airflow", "fluxo_platform", "fluxo_dev"):
                raise ImportError(f"{name} is not on AWS Glue")
            return None

    sys.meta_path.insert(0, NotOnGlue())
    sys.path.insert(0, zip_path)
    for module in modules:
        importlib.import_module(module)
    outside = [n for n, m in sys.modules.items()
               if n.split(".")[0] == "fluxo" and not (getattr(m, "__file__", "") or "").startswith(zip_path)]
    assert not outside, outside
    # every packaged data file is readable the way the code reads it: importlib.resources
    import zipfile
    from importlib import resources
    for name in zipfile.ZipFile(zip_path).namelist():
        if not name.endswith(".py"):
            parts = name.split("/")
            depth = max(
                i for i in range(1, len(parts)) if hasattr(sys.modules.get(".".join(parts[:i])), "__path__")
            )
            data = resources.files(".".join(parts[:depth])).joinpath(*parts[depth:]).read_bytes()
            assert data, name
    print(json.dumps(sorted(n for n in sys.modules if n.split(".")[0] == "fluxo")))
    """
)


def test_library_zip_is_the_fluxo_folder_and_imports_alone(tmp_path):
    zip_path = glue_package.build_library_zip(tmp_path / "dist")
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
    on_disk = {p.relative_to(REPO_ROOT).as_posix() for p in glue_package.library_files()}
    assert names == on_disk and "fluxo/reference/fx_rates.csv" in names
    assert all(name.startswith("fluxo/") for name in names)
    modules = sorted(
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for name in names if name.endswith(".py")
    )
    # every module of the library imports from the zip alone, on a clean interpreter
    done = subprocess.run(
        [sys.executable, "-I", "-c", _IMPORT_CHECK, str(zip_path), json.dumps(modules), str(REPO_ROOT)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) >= set(modules)
    # same sources, same bytes: re-uploading an unchanged library changes nothing
    assert glue_package.build_library_zip(tmp_path / "again").read_bytes() == zip_path.read_bytes()


def _imported_packages(folder: Path) -> dict[str, set[str]]:
    """Top-level packages each .py file under folder imports (anywhere in the file)."""
    import ast

    found = {}
    for path in folder.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        found[path.relative_to(REPO_ROOT).as_posix()] = names
    return found


def test_production_code_never_imports_the_development_tools():
    for folder in ("fluxo", "plugins", "dags", "glue_scripts", "api"):
        for path, packages in _imported_packages(REPO_ROOT / folder).items():
            assert "fluxo_dev" not in packages, f"{path} imports the development tools"


def test_the_glue_library_imports_nothing_airflow_side():
    for path, packages in _imported_packages(REPO_ROOT / "fluxo").items():
        assert not packages & {"airflow", "fluxo_platform", "fluxo_extract", "fluxo_glue", "fluxo_tasks",
                               "pydantic_settings"}, path


def test_additional_modules_pin_the_versions_run_locally():
    for pin in glue_package.requirement_pins():
        name, version = pin.split("==")
        assert metadata.version(name.split("[")[0]) == version


def test_cli_build_lists_the_zip(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "fluxo_platform.glue_package", "build", "--out", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"built {tmp_path / 'fluxo-0.1.0.zip'}" in done.stdout
    assert "fluxo/contract.py" in done.stdout
