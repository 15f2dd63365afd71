"""Packages the Glue side of fluxo and deploys its job definitions to AWS Glue.

`build` zips the part of the `fluxo` package that the Glue scripts import (the
`--extra-py-files` library); `deploy` uploads every `glue_scripts/*.py` and the
zip, then creates or updates one Glue job per script. The Airflow operator
(plugins/fluxo_glue) builds its job from `job_definition` too, so a deployed job
and a job the operator creates on the fly are the same definition.

    python -m fluxo.glue_package build [--out DIR]
    python -m fluxo.glue_package deploy
"""

from __future__ import annotations

import argparse
import ast
import re
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxo import __version__

if TYPE_CHECKING:
    from fluxo.settings import FluxoSettings

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
SCRIPTS_DIR = REPO_ROOT / "glue_scripts"
CONSTRAINTS = REPO_ROOT / "constraints.txt"

GLUE_VERSION = "6.0"
# What the scripts import beyond Glue 6.0's own modules (pyspark, pandas,
# pyarrow, boto3 ship with Glue); versions come from constraints.txt.
EXTRA_REQUIREMENTS = ("great_expectations", "deltalake", "psycopg[binary]")
# Always shipped, even before any script imports them: the contract and zone layout.
BASELINE_MODULES = ("fluxo.contract", "fluxo.lake")
# Airflow/developer-side modules: they need pydantic-settings or start local
# services, neither of which exists on a Glue worker.
DEV_ONLY_MODULES = frozenset(
    {"fluxo.settings", "fluxo.stack", "fluxo.demo", "fluxo.generator", "fluxo.glue_package"}
)
_DOTTED_FLUXO = re.compile(r"^fluxo(\.[A-Za-z_][A-Za-z0-9_]*)+$")
# Fixed timestamp so the same sources always give a byte-identical zip.
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


# --- which modules the Glue library needs ---------------------------------


def script_names(scripts_dir: Path = SCRIPTS_DIR) -> list[str]:
    """Stage names, one per `glue_scripts/<name>.py` (helpers starting with `_` excluded)."""
    return sorted(p.stem for p in Path(scripts_dir).glob("*.py") if not p.name.startswith("_"))


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != "fluxo":
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _is_main_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return (
        isinstance(node, ast.If)
        and isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
    )


def fluxo_imports(path: Path, module: str | None = None) -> tuple[set[str], set[str]]:
    """The fluxo modules a file imports: (at module level, inside functions).

    Module-level imports must be importable for the module to load; imports
    inside functions are only needed when that function runs. `module` is the
    dotted name of a library module (its `__main__` block never runs on import);
    None for a script, whose `__main__` block is what runs.
    """
    package = ""
    if module:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    eager: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking_block(child) or (module and _is_main_block(child)):
                continue
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            found: list[str] = []
            if isinstance(child, ast.Import):
                found = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from fluxo.x import y` may name a submodule y or an attribute of fluxo.x.
                found = [base] + [f"{base}.{alias.name}" for alias in child.names]
            for name in found:
                if _module_file(name) is not None:
                    (lazy if nested else eager).add(name)
            # a package named in a string, e.g. resources.files("fluxo.reference"),
            # is needed for its data files when that code runs
            if isinstance(child, ast.Constant) and isinstance(child.value, str):
                if _DOTTED_FLUXO.match(child.value) and _module_file(child.value) is not None:
                    lazy.add(child.value)
            visit(child, nested)

    visit(ast.parse(Path(path).read_text(encoding="utf-8")), in_function=False)
    return eager, lazy


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def library_modules(scripts_dir: Path = SCRIPTS_DIR) -> list[str]:
    """Every fluxo module the Glue scripts can reach through their imports.

    Raises when a module-level import chain reaches a developer-only module:
    such a script would fail with ImportError on Glue.
    """
    # (module, the file that imports it at module level); eager imports are all
    # resolved before any import found inside a function.
    eager_pending: list[tuple[str, str]] = [(m, "baseline") for m in BASELINE_MODULES]
    lazy_pending: list[str] = []
    for script in script_names(scripts_dir):
        eager, lazy = fluxo_imports(Path(scripts_dir) / f"{script}.py")
        eager_pending += [(m, f"glue_scripts/{script}.py") for m in sorted(eager)]
        lazy_pending += sorted(lazy)
    seen: set[str] = set()
    while eager_pending or lazy_pending:
        module, required_by = eager_pending.pop() if eager_pending else (lazy_pending.pop(), "")
        for name in _with_parents(module):
            if name in DEV_ONLY_MODULES:
                if required_by:
                    raise ValueError(
                        f"{required_by} imports {name} at module level, but {name} is developer-only "
                        "and is not shipped to Glue; import it lazily or move the code it needs"
                    )
                continue
            if name in seen:
                continue
            seen.add(name)
            eager, lazy = fluxo_imports(_module_file(name), name)
            if required_by:
                eager_pending += [(m, name) for m in sorted(eager)]
            else:
                lazy_pending += sorted(eager)
            lazy_pending += sorted(lazy)
    return sorted(seen)


def _data_files(package_dir: Path) -> Iterable[Path]:
    """Non-Python files of a package, including plain (non-package) subfolders such as migrations/."""
    for path in sorted(package_dir.rglob("*")):
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        # stop at nested Python packages: they are shipped only if imported
        folder = path.parent
        while folder != package_dir and not (folder / "__init__.py").exists():
            folder = folder.parent
        if folder == package_dir:
            yield path


def library_zip_name(version: str = __version__) -> str:
    return f"fluxo-{version}.zip"


def build_library_zip(out_dir: str | Path, scripts_dir: Path = SCRIPTS_DIR) -> Path:
    """Zip the fluxo modules the Glue scripts need (plus their data files) into out_dir."""
    modules = library_modules(scripts_dir)
    files: set[Path] = set()
    for module in modules:
        file = _module_file(module)
        files.add(file)
        if file.name == "__init__.py":
            files.update(_data_files(file.parent))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / library_zip_name()
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(files):
            info = zipfile.ZipInfo(file.relative_to(REPO_ROOT).as_posix(), date_time=_ZIP_DATE)
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
        "MaxRetries": 0,
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

    with tempfile.TemporaryDirectory(prefix="fluxo-glue-") as tmp:
        zip_path = build_library_zip(tmp, scripts_dir)
        s3.upload_file(str(zip_path), bucket, library_key())
        print(f"uploaded {zip_path.name} -> s3://{bucket}/{library_key()}")

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fluxo.glue_package", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the --extra-py-files library zip")
    build.add_argument("--out", default=str(REPO_ROOT / "dist"), help="output folder (default: dist/)")
    sub.add_parser("deploy", help="upload scripts + library and create/update every Glue job")
    args = parser.parse_args(argv)

    if args.command == "build":
        path = build_library_zip(args.out)
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        print(f"built {path} ({path.stat().st_size} bytes, {len(names)} files)")
        for name in names:
            print(f"  {name}")
        return 0

    from fluxo.settings import get_settings

    deploy(get_settings())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
