"""Packages the Glue side of fluxo and deploys its job definitions to AWS Glue.

`build` zips the part of the `fluxo` package that the Glue scripts import (the
`--extra-py-files` library); `deploy` uploads every `glue_scripts/*.py` and the
zip, then creates or updates one Glue job per script. The Airflow operator
(plugins/fluxo_glue) builds its job from `job_definition` too, so a deployed job
and a job the operator creates on the fly are the same definition.
`mwaa` builds what Amazon MWAA runs the DAGs from (dags/, plugins.zip, requirements.txt);
`deploy` also uploads it when FLUXO_MWAA_SOURCE_URI names the environment's bucket.

    python -m fluxo_platform.glue_package build [--out DIR]
    python -m fluxo_platform.glue_package mwaa [--out DIR]
    python -m fluxo_platform.glue_package deploy
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from fluxo import __version__
from fluxo.spark import DELTA_SQL_CONF, logstore_conf

if TYPE_CHECKING:
    from fluxo_platform.settings import FluxoSettings


def _code_root() -> Path:
    """A checkout (<root>/plugins/fluxo_platform/), or MWAA's unzipped plugins.zip (<root>/fluxo_platform/)."""
    here = Path(__file__).resolve()
    return next((p for p in (here.parents[2], here.parents[1]) if (p / "glue_scripts").is_dir()), here.parents[2])


REPO_ROOT = _code_root()
# The library the Glue jobs import (--extra-py-files): this one folder, zipped as it is.
LIBRARY_DIR = REPO_ROOT / "fluxo"
SCRIPTS_DIR = REPO_ROOT / "glue_scripts"
EXPECTATIONS_DIR = REPO_ROOT / "expectations"
CONSTRAINTS = REPO_ROOT / "constraints.txt"

GLUE_VERSION = "6.0"
# What the scripts import beyond Glue 6.0's own modules (pyspark, pandas,
# pyarrow, boto3 ship with Glue); versions come from constraints.txt.
EXTRA_REQUIREMENTS = ("great_expectations",)
# Fixed timestamp so the same sources always give a byte-identical zip.
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def script_names(scripts_dir: Path = SCRIPTS_DIR) -> list[str]:
    """Stage names, one per `glue_scripts/<name>.py` (helpers starting with `_` excluded)."""
    return sorted(p.stem for p in Path(scripts_dir).glob("*.py") if not p.name.startswith("_"))


def library_files(library_dir: Path = LIBRARY_DIR) -> list[Path]:
    """Every file of the library folder except bytecode caches."""
    return sorted(
        p for p in Path(library_dir).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def library_zip_name(version: str = __version__) -> str:
    return f"fluxo-{version}.zip"


def build_library_zip(out_dir: str | Path, library_dir: Path = LIBRARY_DIR) -> Path:
    """Zip the library folder (modules and data files) into out_dir, byte-identical for the same sources."""
    library_dir = Path(library_dir)
    return _write_zip(Path(out_dir) / library_zip_name(),
                      [(file.relative_to(library_dir.parent).as_posix(), file) for file in library_files(library_dir)])


def _write_zip(target: Path, members: Iterable[tuple[str, Path]]) -> Path:
    """A zip of (name in the zip, file) pairs, byte-identical for the same files."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, file in members:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, file.read_bytes())
    return target


# --- the job definition ---------------------------------------------------


def requirement_pins(names: Iterable[str] = EXTRA_REQUIREMENTS, constraints: Path = CONSTRAINTS) -> list[str]:
    """`name==version` for each requirement, versions from constraints.txt (else the installed ones)."""
    pinned: dict[str, str] = {}
    if constraints.is_file():
        for line in constraints.read_text(encoding="utf-8").splitlines():
            m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
            if m:
                pinned[_normalize(m.group(1))] = m.group(2)
    pins = []
    for name in names:
        dist = name.split("[", 1)[0]
        version = pinned.get(_normalize(dist)) or metadata.version(dist)
        pins.append(f"{name}=={version}")
    return pins


def _normalize(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def job_name(settings: FluxoSettings, script: str) -> str:
    return f"{settings.glue_job_prefix}{script}"


def script_key(script: str) -> str:
    return f"scripts/{script}.py"


def library_key() -> str:
    return f"libs/{library_zip_name()}"


def logstore_key() -> str:
    return "jars/fluxo-delta-logstore.jar"


def expectations_prefix() -> str:
    return "expectations/"


def stage_arguments(settings: FluxoSettings) -> dict[str, str]:
    """The platform settings every stage reads, as Glue arguments: the one place they become arguments.

    The operator adds them to each run (the DAG's own arguments win); a stage ignores the ones it
    does not use. The expectation suites are data the stage reads at run time: the repository's
    folder locally, their uploaded copy on AWS.
    """
    if settings.glue_mode == "aws":
        expectations_root = f"s3://{settings.glue_artifacts_bucket}/{expectations_prefix()}"
    else:
        expectations_root = str(EXPECTATIONS_DIR)
    return {
        "--lake_root": settings.lake_root,
        "--reporting_currency": settings.reporting_currency.upper(),
        "--expectations_root": expectations_root,
    }


def script_arguments(args: Mapping[str, Any] | None) -> dict[str, str]:
    """Glue job arguments as Glue receives them: `--name` keys, string values."""
    out: dict[str, str] = {}
    for key, value in (args or {}).items():
        if not str(key).startswith("--"):
            raise ValueError(f"Glue argument names start with '--': {key!r}")
        if value is None:
            raise ValueError(f"Glue argument {key} has no value")
        out[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def default_arguments(settings: FluxoSettings) -> dict[str, str]:
    bucket = settings.glue_artifacts_bucket
    return {
        "--job-language": "python",
        # Glue 6.0's built-in Delta Lake: the same delta-spark API the stages use locally, with
        # the session extensions a local session sets (fluxo.spark.DELTA_SQL_CONF)
        "--datalake-formats": "delta",
        # and fluxo's log store for S3 (conditional PUTs), so jobs of different days can commit at once
        "--extra-jars": f"s3://{bucket}/{logstore_key()}",
        "--conf": " --conf ".join(f"{key}={value}" for key, value in {**DELTA_SQL_CONF, **logstore_conf()}.items()),
        "--extra-py-files": f"s3://{bucket}/{library_key()}",
        "--additional-python-modules": ",".join(requirement_pins()),
        "--enable-metrics": "true",
        "--enable-continuous-cloudwatch-log": "true",
        "--TempDir": f"s3://{bucket}/tmp/",
    }


def job_definition(settings: FluxoSettings, script: str) -> dict[str, Any]:
    """The Glue CreateJob request for one stage, in the shape GlueJobHook builds it."""
    name = job_name(settings, script)
    bucket = settings.glue_artifacts_bucket
    return {
        "Name": name,
        "Description": f"fluxo {script} stage (glue_scripts/{script}.py)",
        # Glue accepts a role name or an ARN here.
        "Role": settings.glue_role,
        "ExecutionProperty": {"MaxConcurrentRuns": 1},
        "Command": {"Name": "glueetl", "ScriptLocation": f"s3://{bucket}/{script_key(script)}", "PythonVersion": "3"},
        "MaxRetries": settings.glue_max_retries,
        # minutes; without it AWS lets a hung job run (and bill) for 48 hours
        "Timeout": settings.glue_timeout_minutes,
        "GlueVersion": GLUE_VERSION,
        "WorkerType": settings.glue_worker_type,
        "NumberOfWorkers": settings.glue_number_of_workers,
        "DefaultArguments": default_arguments(settings),
        # the log location GlueJobHook sets when it is given the artifacts bucket
        "LogUri": f"s3://{bucket}/logs/glue-logs/{name}",
    }


# --- deploy ---------------------------------------------------------------


def _ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
            raise
        extra = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=bucket, **extra)
        print(f"created bucket s3://{bucket}")


def upload_artifacts(s3: Any, bucket: str) -> None:
    """The library zip, the log store jar and the expectation suites, where every job reads them."""
    from fluxo_platform.jvm import build_logstore

    with tempfile.TemporaryDirectory(prefix="fluxo-glue-") as tmp:
        zip_path = build_library_zip(tmp)
        s3.upload_file(str(zip_path), bucket, library_key())
        print(f"uploaded {zip_path.name} -> s3://{bucket}/{library_key()}")
    s3.upload_file(str(build_logstore()), bucket, logstore_key())
    for suite in sorted(EXPECTATIONS_DIR.glob("*.json")):
        s3.upload_file(str(suite), bucket, expectations_prefix() + suite.name)
    print(f"uploaded the expectation suites -> s3://{bucket}/{expectations_prefix()}")


def deploy(settings: FluxoSettings, scripts_dir: Path = SCRIPTS_DIR) -> dict[str, str]:
    """Upload the scripts and the library zip, then create or update every job (idempotent).

    Returns {job name: "created" | "updated" | "unchanged"}.
    """
    import boto3

    region = settings.aws_region
    s3 = boto3.client("s3", region_name=region)
    glue = boto3.client("glue", region_name=region)
    bucket = settings.glue_artifacts_bucket
    _ensure_bucket(s3, bucket, region)

    upload_artifacts(s3, bucket)

    actions: dict[str, str] = {}
    for script in script_names(scripts_dir):
        s3.upload_file(str(Path(scripts_dir) / f"{script}.py"), bucket, script_key(script))
        definition = job_definition(settings, script)
        name = definition.pop("Name")
        try:
            current = glue.get_job(JobName=name)["Job"]
        except glue.exceptions.EntityNotFoundException:
            glue.create_job(Name=name, **definition)
            actions[name] = "created"
        else:
            changed = sorted(k for k, v in definition.items() if current.get(k) != v)
            if changed:
                glue.update_job(JobName=name, JobUpdate=definition)
                actions[name] = "updated (" + ", ".join(changed) + ")"
            else:
                actions[name] = "unchanged"
        print(f"job {name}: {actions[name]} <- s3://{bucket}/{script_key(script)}")
    if not actions:
        print(f"no Glue scripts found in {scripts_dir}")
    return actions


# --- MWAA -----------------------------------------------------------------

DAGS_DIR = REPO_ROOT / "dags"
PLUGINS_DIR = REPO_ROOT / "plugins"
# MWAA brings Airflow itself; its requirements.txt adds what the DAG side imports besides.
MWAA_PROVIDED = ("apache-airflow",)


def dag_side_modules(folders: Iterable[Path] = (DAGS_DIR, PLUGINS_DIR)) -> set[str]:
    """Top-level modules imported anywhere in the DAG files and the Airflow-side packages."""
    found: set[str] = set()
    for folder in folders:
        for path in Path(folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module.split(".")[0])
    return found


def mwaa_requirements(requirements: Path = REPO_ROOT / "requirements.txt") -> list[str]:
    """The pins of requirements.txt whose distributions the DAG side imports (not Spark, GX or the API's)."""
    provides = metadata.packages_distributions()
    imported = {_normalize(dist) for module in dag_side_modules() for dist in provides.get(module, [])}
    pins = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*==", line)
        if m and _normalize(m.group(1)) in imported and m.group(1) not in MWAA_PROVIDED:
            pins.append(line.split("#", 1)[0].strip())
    return pins


def plugins_zip_members() -> list[tuple[str, Path]]:
    """plugins.zip: plugins/ at its root (MWAA unzips it into its plugins folder, which is on sys.path),
    with the Glue library, scripts, suites and lock beside, so the operator finds them as in a checkout."""
    members = [(p.relative_to(PLUGINS_DIR).as_posix(), p) for p in sorted(PLUGINS_DIR.rglob("*"))
               if p.is_file() and "__pycache__" not in p.parts]
    for folder in (LIBRARY_DIR, SCRIPTS_DIR, EXPECTATIONS_DIR):
        members += [(p.relative_to(REPO_ROOT).as_posix(), p) for p in library_files(folder)]
    return members + [(CONSTRAINTS.name, CONSTRAINTS)]


def build_mwaa_bundle(out_dir: str | Path) -> Path:
    """<out>/dags/*.py, <out>/plugins.zip and <out>/requirements.txt: what an MWAA environment runs."""
    out = Path(out_dir)
    shutil.rmtree(out / "dags", ignore_errors=True)
    (out / "dags").mkdir(parents=True)
    for dag_file in sorted(DAGS_DIR.glob("*.py")):
        shutil.copy2(dag_file, out / "dags" / dag_file.name)
    _write_zip(out / "plugins.zip", plugins_zip_members())
    (out / "requirements.txt").write_text(
        "# Generated by `make deploy` from requirements.txt: what the fluxo DAGs import besides Airflow.\n"
        + "\n".join(mwaa_requirements()) + "\n", encoding="utf-8")
    return out


def deploy_mwaa(settings: FluxoSettings, out_dir: str | Path) -> dict[str, str] | None:
    """Build the bundle; when FLUXO_MWAA_SOURCE_URI is set, upload it there. Returns {what: s3 uri (version)}."""
    import boto3

    bundle = build_mwaa_bundle(out_dir)
    print(f"built the MWAA bundle in {bundle}: dags/, plugins.zip, requirements.txt")
    if not settings.mwaa_source_uri:
        print("FLUXO_MWAA_SOURCE_URI is not set: the MWAA bundle was not uploaded")
        return None
    target = urlparse(settings.mwaa_source_uri)
    bucket, prefix = target.netloc, target.path.strip("/")
    s3 = boto3.client("s3", region_name=settings.aws_region)
    uploaded: dict[str, str] = {}
    files = [(f"dags/{p.name}", p) for p in sorted((bundle / "dags").glob("*.py"))]
    files += [("plugins.zip", bundle / "plugins.zip"), ("requirements.txt", bundle / "requirements.txt")]
    for name, path in files:
        key = "/".join(filter(None, [prefix, name]))
        s3.upload_file(str(path), bucket, key)
        version = s3.head_object(Bucket=bucket, Key=key).get("VersionId")
        uploaded[name] = f"s3://{bucket}/{key}" + (f" (version {version})" if version else "")
    for name in ("plugins.zip", "requirements.txt"):
        print(f"uploaded {name} -> {uploaded[name]}")
    print(f"uploaded {len(files) - 2} DAG files -> s3://{bucket}/{'/'.join(filter(None, [prefix, 'dags']))}/")
    return uploaded


def aws_error(exc: Exception) -> str | None:
    """One line for the AWS failures a person can fix (no credentials, no access, no network), else None."""
    from botocore import exceptions as aws

    if isinstance(exc, (aws.NoCredentialsError, aws.PartialCredentialsError)):
        return ("no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or run where an IAM role is attached (docs/aws.md)")
    if isinstance(exc, aws.NoRegionError):
        return "no AWS region: set FLUXO_AWS_REGION"
    if isinstance(exc, aws.EndpointConnectionError):
        return f"cannot reach AWS at {exc.kwargs.get('endpoint_url')}: check the network or AWS_ENDPOINT_URL"
    if isinstance(exc, aws.ClientError):
        error = exc.response.get("Error", {})
        return f"AWS refused {exc.operation_name}: {error.get('Code')}: {error.get('Message')}"
    if isinstance(exc, aws.BotoCoreError):
        return f"AWS: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fluxo_platform.glue_package", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the --extra-py-files library zip")
    build.add_argument("--out", default=str(REPO_ROOT / "dist"), help="output folder (default: dist/)")
    mwaa = sub.add_parser("mwaa", help="build the MWAA bundle: dags/, plugins.zip, requirements.txt")
    mwaa.add_argument("--out", default=str(REPO_ROOT / "dist" / "mwaa"), help="output folder (default: dist/mwaa)")
    deploy_cmd = sub.add_parser("deploy", help="create/update every Glue job, build (and upload) the MWAA bundle")
    deploy_cmd.add_argument("--out", default=str(REPO_ROOT / "dist" / "mwaa"), help="where the MWAA bundle is built")
    args = parser.parse_args(argv)

    if args.command == "build":
        path = build_library_zip(args.out)
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        print(f"built {path} ({path.stat().st_size} bytes, {len(names)} files)")
        for name in names:
            print(f"  {name}")
        return 0

    if args.command == "mwaa":
        bundle = build_mwaa_bundle(args.out)
        print(f"built {bundle}: requirements.txt pins " + ", ".join(mwaa_requirements()))
        return 0

    from fluxo_platform.settings import get_settings

    try:
        deploy(get_settings())
        deploy_mwaa(get_settings(), args.out)
    except Exception as exc:  # noqa: BLE001 - a fixable AWS problem is one line, anything else its traceback
        line = aws_error(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
