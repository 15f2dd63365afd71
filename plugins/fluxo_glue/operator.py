"""One operator for every Glue stage: AWS Glue or a local run, chosen by FLUXO_GLUE_MODE.

The mode is read when the task executes, never when the DAG is parsed, so the
same DAG file drives both worlds:

- ``aws``: the Amazon provider's GlueJobOperator machinery. The script goes to
  ``s3://<glue_artifacts_bucket>/scripts/<script>.py``, the fluxo library zip to
  ``.../libs/``, the job is created or updated from ``fluxo.glue_package.job_definition``
  (Glue 6.0) and the run is awaited; a failed run raises with Glue's error message.
- ``local``: ``python glue_scripts/<script>.py --JOB_NAME <job> <args>``, the
  arguments AWS Glue would receive, with the output streamed into the task log;
  a failed run raises with the script's ``FLUXO_ERROR:`` line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
from airflow.providers.common.compat.sdk import AirflowException

from fluxo import glue_package
from fluxo.settings import FluxoSettings

if TYPE_CHECKING:
    from airflow.sdk import Context

ERROR_PREFIX = "FLUXO_ERROR:"
# Environment a local run inherits: what Spark and the scripts need, never the
# rest of the Airflow worker's environment (connections, secrets).
_PASSTHROUGH_ENV = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "JAVA_HOME", "SPARK_HOME")
_PASSTHROUGH_PREFIXES = ("FLUXO_", "AWS_", "PYSPARK_", "SPARK_", "HADOOP_")
_STDERR_TAIL_LINES = 20


def local_environment(repo_root: Path = glue_package.REPO_ROOT) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k in _PASSTHROUGH_ENV or k.startswith(_PASSTHROUGH_PREFIXES)
    }
    # the repo root on the path plays the part of --extra-py-files
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def failure_message(stderr_tail: Sequence[str]) -> str:
    """The script's last `FLUXO_ERROR:` line, else the tail of its stderr."""
    for line in reversed(stderr_tail):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX) :].strip()
    return "\n".join(stderr_tail[-5:]) or "no output on stderr"


class FluxoGlueJobOperator(GlueJobOperator):
    """Run ``glue_scripts/<script>.py`` on AWS Glue or locally, by the FLUXO_GLUE_MODE setting.

    :param script: stage name, the stem of ``glue_scripts/<script>.py``
    :param script_args: Glue arguments (``{"--ingest_date": "{{ ds }}"}``), templated
    :param job_name: Glue job name; defaults to ``<glue_job_prefix><script>``
    :param scripts_dir: folder holding the scripts (default: the repo's ``glue_scripts/``)

    Other keyword arguments go to GlueJobOperator (``deferrable``, ``job_poll_interval``,
    ``aws_conn_id``, ``verbose`` ...) and apply in AWS mode only.
    Returns (XCom) ``{"job_name", "mode", "duration_s", "run_id"}``.
    """

    template_fields: Sequence[str] = (*GlueJobOperator.template_fields, "script")

    def __init__(
        self,
        *,
        script: str,
        script_args: dict[str, Any] | None = None,
        job_name: str | None = None,
        scripts_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("update_config", True)
        kwargs.setdefault("replace_script_file", True)
        super().__init__(job_name=job_name or "", script_args=script_args, **kwargs)
        self.script = script
        self.scripts_dir = str(scripts_dir or glue_package.SCRIPTS_DIR)
        self._process: subprocess.Popen[str] | None = None
        self._mode: str | None = None

    @property
    def script_path(self) -> Path:
        return Path(self.scripts_dir) / f"{self.script}.py"

    def execute(self, context: Context) -> dict[str, Any]:
        settings = FluxoSettings()
        self._mode = settings.glue_mode
        self.job_name = self.job_name or glue_package.job_name(settings, self.script)
        args = glue_package.script_arguments(self.script_args)
        if not self.script_path.is_file():
            raise AirflowException(f"Glue script not found: {self.script_path}")

        started = time.monotonic()
        if self._mode == "local":
            self._run_locally(args)
            run_id = None
        else:
            run_id = self._run_on_glue(settings, args, context)
        duration = round(time.monotonic() - started, 3)
        self.log.info("Glue job %s (%s mode) succeeded in %.1f s", self.job_name, self._mode, duration)
        return {"job_name": self.job_name, "mode": self._mode, "duration_s": duration, "run_id": run_id}

    # --- local ------------------------------------------------------------

    def _run_locally(self, args: dict[str, str]) -> None:
        command = [sys.executable, str(self.script_path), "--JOB_NAME", self.job_name]
        for key, value in args.items():
            command += [key, value]
        self.log.info("Running locally: %s", " ".join(command))
        stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)

        # Glue starts a job in an empty working directory; so does a local run.
        with tempfile.TemporaryDirectory(prefix=f"{self.job_name}-") as workdir:
            self._process = subprocess.Popen(
                command,
                cwd=workdir,
                env=local_environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                bufsize=1,
                # its own process group, so on_kill also stops the Spark JVM it starts
                start_new_session=True,
            )

            def pump_stderr() -> None:
                for line in self._process.stderr:
                    line = line.rstrip("\n")
                    stderr_tail.append(line)
                    self.log.info("[stderr] %s", line)

            reader = threading.Thread(target=pump_stderr, daemon=True)
            reader.start()
            for line in self._process.stdout:
                self.log.info("%s", line.rstrip("\n"))
            returncode = self._process.wait()
            reader.join()
            self._process = None

        if returncode != 0:
            raise AirflowException(
                f"Glue script {self.script} failed (exit {returncode}): {failure_message(list(stderr_tail))}"
            )

    # --- AWS --------------------------------------------------------------

    def _run_on_glue(self, settings: FluxoSettings, args: dict[str, str], context: Context) -> str | None:
        definition = glue_package.job_definition(settings, self.script)
        # Feed GlueJobOperator/GlueJobHook the same definition `deploy` creates: the
        # hook assembles Name, Description, Role, ExecutionProperty, MaxRetries and
        # LogUri (from s3_bucket) itself, the rest goes through create_job_kwargs.
        self.region_name = self.region_name or settings.aws_region
        self.s3_bucket = settings.glue_artifacts_bucket
        self.s3_artifacts_prefix = "scripts/"
        self.script_location = str(self.script_path)
        self.job_desc = definition["Description"]
        self.iam_role_arn = definition["Role"]
        self.concurrent_run_limit = definition["ExecutionProperty"]["MaxConcurrentRuns"]
        self.retry_limit = definition["MaxRetries"]
        self.create_job_kwargs = {
            key: definition[key]
            for key in ("Command", "GlueVersion", "WorkerType", "NumberOfWorkers", "DefaultArguments")
        }
        self.script_args = args
        self._upload_library(settings)
        return super().execute(context)

    def _upload_library(self, settings: FluxoSettings) -> None:
        """Ship the fluxo library zip the job's --extra-py-files points at."""
        s3 = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify)
        with tempfile.TemporaryDirectory(prefix="fluxo-glue-") as tmp:
            zip_path = glue_package.build_library_zip(tmp, Path(self.scripts_dir))
            key = glue_package.library_key()
            s3.load_file(str(zip_path), key, bucket_name=settings.glue_artifacts_bucket, replace=True)
        self.log.info("Uploaded %s to s3://%s/%s", zip_path.name, settings.glue_artifacts_bucket, key)

    def _run_error(self, run_id: str) -> str:
        run = self.hook.conn.get_job_run(JobName=self.job_name, RunId=run_id)["JobRun"]
        return f"{run.get('JobRunState')}: {run.get('ErrorMessage') or 'no error message from Glue'}"

    def poll_until_complete(self, external_id: Any, context: Context) -> None:
        try:
            super().poll_until_complete(external_id, context)
        except AirflowException as exc:
            raise AirflowException(
                f"Glue job {self.job_name} run {external_id} failed: {self._run_error(str(external_id))}"
            ) from exc

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        run_id = super().execute_complete(context, event)
        self.job_name = self.job_name or glue_package.job_name(FluxoSettings(), self.script)
        return {"job_name": self.job_name, "mode": "aws", "duration_s": None, "run_id": run_id}

    def on_kill(self) -> None:
        if self._process is not None:
            self.log.info("Terminating local run of %s (process group %s)", self.script, self._process.pid)
            try:
                os.killpg(self._process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            return
        super().on_kill()
