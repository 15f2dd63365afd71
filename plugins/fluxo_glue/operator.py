"""One operator for every Glue stage: AWS Glue or a local run, chosen by FLUXO_GLUE_MODE.

The mode is read when the task executes, never when the DAG is parsed, so the
same DAG file drives both worlds:

- ``aws``: the Amazon provider's GlueJobOperator machinery. The script goes to
  ``s3://<glue_artifacts_bucket>/scripts/<script>.py``, the fluxo library zip to
  ``.../libs/``, the job is created or updated from ``fluxo_platform.glue_package.job_definition``
  (Glue 6.0) and the run is awaited; a failed run raises with Glue's error message.
- ``local``: ``python glue_scripts/<script>.py --JOB_NAME <job> <args>``, the
  arguments AWS Glue would receive, with the output streamed into the task log;
  a failed run raises with the script's ``FLUXO_ERROR:`` line. Under the local stack the
  script runs in one of its warm interpreters (``fluxo_platform.stage_pool``, FLUXO_STAGE_POOL),
  which have its imports done; without one, in a new process.

In both, a stage whose inputs are unchanged since its last successful run for the day
(`fluxo_glue.rerun`) is not run again: the task logs why and returns the results of that run.
"""

from __future__ import annotations

import os
import re
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

from airflow.providers.amazon.aws.links.glue import GlueJobRunDetailsLink
from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
from airflow.providers.common.compat.sdk import AirflowException

from fluxo.lake import Lake
from fluxo_platform import glue_package, jvm, lakefs, stage_pool
from fluxo_platform.settings import FluxoSettings
from fluxo_glue import rerun

if TYPE_CHECKING:
    from airflow.sdk import Context

ERROR_PREFIX = "FLUXO_ERROR:"
_UNSAFE_IN_PATH = re.compile(r"[^A-Za-z0-9._-]+")
# Environment a local run inherits: what Spark and the scripts need, never the
# rest of the Airflow worker's environment (connections, secrets).
_PASSTHROUGH_ENV = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "JAVA_HOME", "SPARK_HOME")
_PASSTHROUGH_PREFIXES = ("FLUXO_", "AWS_", "PYSPARK_", "SPARK_", "HADOOP_")
_STDERR_TAIL_LINES = 20
# XCom key of the inputs fingerprint taken before the run (a deferred run records it when it completes)
INPUTS_KEY = "inputs_fingerprint"


def local_environment(settings: FluxoSettings, repo_root: Path = glue_package.REPO_ROOT) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k in _PASSTHROUGH_ENV or k.startswith(_PASSTHROUGH_PREFIXES)
    }
    # secrets are not job arguments: the tokenisation salt travels in the environment
    if settings.token_salt:
        env["FLUXO_TOKEN_SALT"] = settings.token_salt
    env.update(jvm.logstore_env())
    # the repo root on the path plays the part of --extra-py-files
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def stage_run_id(airflow_run_id: str) -> str:
    """An Airflow run id as a path segment (they hold `:` and `+`, which Hadoop paths refuse)."""
    return _UNSAFE_IN_PATH.sub("_", airflow_run_id).strip("_")


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
    :param upstream_stages: the stages whose results it reads (part of its inputs)
    :param reads: lake zones it reads besides (``rerun.RAW``, ``rerun.CURATED``)

    Other keyword arguments go to GlueJobOperator (``deferrable``, ``job_poll_interval``,
    ``aws_conn_id``, ``verbose`` ...) and apply in AWS mode only.
    Every run gets the platform's stage arguments (``glue_package.stage_arguments``) and
    ``--run_id``; returns (XCom) ``{"job_name", "mode", "duration_s", "glue_run_id", "stats"}``,
    ``stats`` being the document the stage wrote for its ingest date (``Lake.stats``), and
    ``skipped`` (true when its inputs had not changed; the run's ``full_refresh`` always runs it).
    """

    template_fields: Sequence[str] = (*GlueJobOperator.template_fields, "script")

    def __init__(
        self,
        *,
        script: str,
        script_args: dict[str, Any] | None = None,
        job_name: str | None = None,
        scripts_dir: str | Path | None = None,
        upstream_stages: Sequence[str] = (),
        reads: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("update_config", True)
        kwargs.setdefault("replace_script_file", True)
        super().__init__(job_name=job_name or "", script_args=script_args, **kwargs)
        self.script = script
        self.scripts_dir = str(scripts_dir or glue_package.SCRIPTS_DIR)
        self.upstream_stages = tuple(upstream_stages)
        self.reads = tuple(reads)
        self._process: subprocess.Popen[str] | None = None
        self._mode: str | None = None

    @property
    def script_path(self) -> Path:
        return Path(self.scripts_dir) / f"{self.script}.py"

    def execute(self, context: Context) -> dict[str, Any]:
        settings = FluxoSettings()
        self._mode = settings.glue_mode
        self.job_name = self.job_name or glue_package.job_name(settings, self.script)
        args = self._arguments(settings, context)
        if not self.script_path.is_file():
            raise AirflowException(f"Glue script not found: {self.script_path}")

        started = time.monotonic()
        inputs = self._inputs(args, context)
        if inputs is not None:
            previous = rerun.previous_run(args, self.script)
            if inputs.unchanged_since(previous):
                self.log.info("Skipping %s: its inputs (code, suites, arguments, upstream results%s) are unchanged "
                              "since its successful run %s at %s", self.script, self._reads_text(),
                              previous.get("run_id"), previous.get("finished_at"))
                self._no_console_link(context)
                return {**self._result(args, None, round(time.monotonic() - started, 3)), "skipped": True,
                        "skipped_reason": f"inputs unchanged since run {previous.get('run_id')}"}
            context["ti"].xcom_push(key=INPUTS_KEY, value=inputs.fingerprint)
        if self._mode == "local":
            self._no_console_link(context)
            self._run_locally(args, local_environment(settings))
            glue_run_id = None
        else:
            glue_run_id = self._run_on_glue(settings, args, context)
        self._record_inputs(args, context, inputs.fingerprint if inputs else None)
        return self._result(args, glue_run_id, round(time.monotonic() - started, 3))

    @staticmethod
    def _no_console_link(context: Context) -> None:
        """A run with no AWS Glue run (local, or skipped) has no console page: an empty link. Without it,
        the task runner's lookup of the link after the task logs "XCom not found" as an error."""
        context["ti"].xcom_push(key=GlueJobRunDetailsLink.key, value={})

    def _reads_text(self) -> str:
        return "".join(f", the {zone} zone" for zone in self.reads)

    def _inputs(self, args: dict[str, str], context: Context) -> rerun.StageInputs | None:
        """The stage's inputs, or None when it must run whatever they are: no day, a full refresh, or
        an operator not told what its stage reads."""
        params = context.get("params") or {}
        if "--ingest_date" not in args or params.get("full_refresh") or not (self.upstream_stages or self.reads):
            return None
        try:
            return rerun.stage_inputs(self.script_path, args, self.upstream_stages, self.reads)
        except Exception as exc:  # noqa: BLE001 - not knowing the inputs means running the stage
            self.log.warning("could not read the inputs of %s (%s): running it", self.script, exc)
            return None

    def _record_inputs(self, args: dict[str, str], context: Context, fingerprint: str | None) -> None:
        if fingerprint is None:
            return
        try:
            rerun.record_run(args, self.script, fingerprint, context.get("run_id"), self.reads)
        except OSError as exc:  # the next run of the day runs the stage again: slower, never wrong
            self.log.warning("could not record the inputs of %s: %s", self.script, exc)

    def _arguments(self, settings: FluxoSettings, context: Context) -> dict[str, str]:
        """The settings' stage arguments, then the DAG's own, then the run's id (where stats go)."""
        args = {**glue_package.stage_arguments(settings), **glue_package.script_arguments(self.script_args)}
        if context.get("run_id"):
            args.setdefault("--run_id", stage_run_id(context["run_id"]))
        return args

    def _result(self, args: dict[str, str], glue_run_id: str | None, duration: float | None) -> dict[str, Any]:
        """The XCom: how the job ran plus the stage's own stats document (the one channel of stage results)."""
        stats = None
        if "--ingest_date" in args:
            uri = Lake(args["--lake_root"]).stats(args["--ingest_date"], self.script)
            try:
                stats = lakefs.read_json(uri)
            except OSError as exc:  # the job succeeded: its results are missing from the audit, not lost work
                self.log.warning("could not read the results of %s at %s: %s", self.script, uri, exc)
        if duration is not None:
            self.log.info("Glue job %s (%s mode) succeeded in %.1f s", self.job_name, self._mode, duration)
        return {"job_name": self.job_name, "mode": self._mode, "duration_s": duration,
                "glue_run_id": glue_run_id, "stats": stats}

    # --- local ------------------------------------------------------------

    def _run_locally(self, args: dict[str, str], env: dict[str, str]) -> None:
        command = [sys.executable, str(self.script_path), "--JOB_NAME", self.job_name]
        for key, value in args.items():
            command += [key, value]
        self.log.info("Running locally: %s", " ".join(command))
        stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)

        # Glue starts a job in an empty working directory; so does a local run.
        with tempfile.TemporaryDirectory(prefix=f"{self.job_name}-") as workdir:
            # the local stack's warm interpreters when it runs them, else a process of its own
            pool = os.environ.get(stage_pool.POOL_SETTING)
            pooled = stage_pool.start_run(pool, command[1:], env, workdir) if pool else None
            if pooled is not None:
                self.log.info("Running in a warm interpreter of the stage pool (pid %s)", pooled.pid)
            self._process = pooled or subprocess.Popen(
                command,
                cwd=workdir,
                env=env,
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
            for key in ("Command", "GlueVersion", "WorkerType", "NumberOfWorkers", "DefaultArguments", "Timeout")
        }
        self.script_args = args
        self._upload_library(settings)
        return super().execute(context)

    def _upload_library(self, settings: FluxoSettings) -> None:
        """Ship the library zip the job's --extra-py-files points at, and the suites it reads."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # AWS mode only; s3transfer is slow to import

        s3 = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, verify=self.verify)
        glue_package.upload_artifacts(s3.get_conn(), settings.glue_artifacts_bucket)

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
        glue_run_id = super().execute_complete(context, event)
        settings = FluxoSettings()
        self._mode = "aws"
        self.job_name = self.job_name or glue_package.job_name(settings, self.script)
        args = self._arguments(settings, context)
        self._record_inputs(args, context, context["ti"].xcom_pull(task_ids=self.task_id, key=INPUTS_KEY))
        return self._result(args, glue_run_id, None)

    def on_kill(self) -> None:
        if self._process is not None:
            self.log.info("Terminating local run of %s (process group %s)", self.script, self._process.pid)
            try:
                os.killpg(self._process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            return
        super().on_kill()
