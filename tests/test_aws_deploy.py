"""AWS deployment against moto: Glue job limits from the settings, the MWAA bundle, a one-line error
without credentials. The moto server and its fixtures are tests/test_glue_operator.py's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile

from fluxo_platform import glue_package
from fluxo_platform.settings import FluxoSettings
from tests.test_glue_operator import REPO_ROOT, _context, _operator, aws, echo_file, moto_server, scripts_dir  # noqa: F401

MWAA_BUCKET = "fluxo-mwaa-test"


def test_glue_jobs_get_their_timeout_and_retries_from_the_settings(aws, scripts_dir, monkeypatch):
    monkeypatch.setenv("FLUXO_GLUE_TIMEOUT_MINUTES", "45")
    monkeypatch.setenv("FLUXO_GLUE_MAX_RETRIES", "1")
    glue_package.deploy(FluxoSettings(), scripts_dir)
    job = aws["glue"].get_job(JobName="fluxo-test-curate")["Job"]
    assert (job["Timeout"], job["MaxRetries"]) == (45, 1)

    monkeypatch.setenv("FLUXO_GLUE_TIMEOUT_MINUTES", "90")
    assert set(glue_package.deploy(FluxoSettings(), scripts_dir).values()) == {"updated (Timeout)"}
    # the operator's on-the-fly definition is the deployed one: running it changes nothing
    _operator(scripts_dir).execute(_context())
    assert aws["glue"].get_job(JobName="fluxo-test-standardize")["Job"]["Timeout"] == 90


def test_the_operator_creates_a_job_with_the_timeout(aws, scripts_dir, echo_file, monkeypatch):
    monkeypatch.setenv("FLUXO_GLUE_TIMEOUT_MINUTES", "30")
    _operator(scripts_dir).execute(_context())
    assert aws["glue"].get_job(JobName="fluxo-test-standardize")["Job"]["Timeout"] == 30


def test_without_credentials_deploy_says_so_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", FLUXO_GLUE_MODE="aws")
    done = subprocess.run([sys.executable, "-m", "fluxo_platform.glue_package", "deploy", "--out", str(tmp_path)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
        "or run where an IAM role is attached (docs/aws.md)"]


def test_make_deploy_uploads_the_mwaa_bundle(aws, tmp_path, monkeypatch):
    aws["s3"].create_bucket(Bucket=MWAA_BUCKET)
    aws["s3"].put_bucket_versioning(Bucket=MWAA_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    monkeypatch.setenv("FLUXO_MWAA_SOURCE_URI", f"s3://{MWAA_BUCKET}/prod")
    done = subprocess.run([sys.executable, "-m", "fluxo_platform.glue_package", "deploy", "--out", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    keys = {o["Key"] for o in aws["s3"].list_objects_v2(Bucket=MWAA_BUCKET)["Contents"]}
    assert {"prod/plugins.zip", "prod/requirements.txt", "prod/dags/transactions_etl.py"} <= keys
    assert "uploaded plugins.zip -> s3://fluxo-mwaa-test/prod/plugins.zip (version " in done.stdout
    requirements = (tmp_path / "requirements.txt").read_text()
    assert "apache-airflow-providers-amazon==" in requirements and "psycopg[binary]==" in requirements
    assert "pyspark" not in requirements and "great-expectations" not in requirements  # Glue's, not the DAGs'
    assert "apache-airflow==" not in requirements  # MWAA brings Airflow


# Parse the DAG folder with nothing but the bundle: no checkout, no editable install on the path.
_BUNDLE_PROBE = textwrap.dedent(
    """
    import json, sys
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
    sys.path[:] = [p for p in sys.path if p not in ("", ".", sys.argv[1], sys.argv[1] + "/plugins")]
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[2])
    import fluxo_tasks, fluxo_glue, fluxo_platform.glue_package as gp
    print("PROBE" + json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags),
                                "from": [fluxo_tasks.__file__, gp.SCRIPTS_DIR.as_posix()],
                                "scripts": gp.script_names()}))
    """
)


def test_the_mwaa_bundle_alone_loads_every_dag(tmp_path):
    bundle = glue_package.build_mwaa_bundle(tmp_path / "mwaa")
    plugins = tmp_path / "airflow" / "plugins"
    with zipfile.ZipFile(bundle / "plugins.zip") as zf:
        zf.extractall(plugins)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHONPATH"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(bundle / "dags"), AIRFLOW__CORE__PLUGINS_FOLDER=str(plugins),
               PYTHONPATH=str(plugins))
    done = subprocess.run([sys.executable, "-c", _BUNDLE_PROBE, str(REPO_ROOT), str(bundle / "dags")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("PROBE"))[5:])
    assert probe["errors"] == {}
    assert {"transactions_etl", "data_freshness", "lake_maintenance"} <= set(probe["dags"])
    assert all(path.startswith(str(plugins)) for path in probe["from"]), probe["from"]
    assert probe["scripts"] == glue_package.script_names()  # the operator finds the Glue scripts in the bundle
