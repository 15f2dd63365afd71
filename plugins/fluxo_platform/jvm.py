"""The JVM side of local Spark, prepared once per machine: Maven packages and fluxo's Delta log store.

    python -m fluxo_platform.jvm      # what bin/bootstrap runs after the pip install

1. Fetches the Spark packages (`fluxo.spark.packages`: delta-spark, hadoop-aws and the AWS SDK
   bundle, ~700 MB) into Ivy's cache, shared by every clone on the machine, so no stage waits
   for Maven and later runs need no network.
2. Compiles `jvm/src/main/java` (one class: `io.fluxo.delta.S3ConditionalPutLogStore`, Delta's
   log store for S3 with conditional PUTs, so several Spark processes can commit to one table)
   into `build/jars/fluxo-delta-logstore.jar` with the machine's `javac`, against the Hadoop
   jars inside pyspark and delta-storage from the Ivy cache. The jar is rebuilt when the source
   is newer. `make deploy` uploads the same jar for AWS Glue (`--extra-jars`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from fluxo import spark as fluxo_spark

REPO_ROOT = Path(__file__).resolve().parents[2]
LOGSTORE_SOURCES = REPO_ROOT / "jvm" / "src" / "main" / "java"
LOGSTORE_JAR = REPO_ROOT / "build" / "jars" / "fluxo-delta-logstore.jar"


def _javac() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "javac").is_file():
        return str(Path(home) / "bin" / "javac")
    return shutil.which("javac")


def _classpath() -> list[Path]:
    # Located, not imported: only the build needs pyspark's jars; MWAA gets the jar already built.
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("building the Delta log store needs pyspark installed (its jars are the classpath)")
    jars = Path(spec.submodule_search_locations[0]) / "jars"
    group, artifact, version = fluxo_spark.DELTA_PACKAGE.split(":")
    storage = fluxo_spark.IVY_CACHE / "jars" / f"{group}_delta-storage-{version}.jar"
    return [*sorted(jars.glob("hadoop-client-api-*.jar")), storage]


def build_logstore(force: bool = False) -> Path:
    """Compile the log store into LOGSTORE_JAR (skipped when the jar is newer than the sources)."""
    sources = sorted(LOGSTORE_SOURCES.rglob("*.java"))
    if not force and LOGSTORE_JAR.is_file() and LOGSTORE_JAR.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return LOGSTORE_JAR
    javac = _javac()
    if javac is None:
        raise RuntimeError("no javac (a JDK 17) on this machine: the Delta log store for S3 cannot be built")
    classpath = _classpath()
    missing = [str(p) for p in classpath if not p.is_file()]
    if missing:
        raise RuntimeError(f"cannot compile the log store, missing {missing}: run `python -m fluxo.spark warm` first")
    with tempfile.TemporaryDirectory(prefix="fluxo-jvm-") as classes:
        subprocess.run(
            [javac, "--release", "17", "-d", classes, "-cp", os.pathsep.join(map(str, classpath)), *map(str, sources)],
            check=True, capture_output=True, text=True,
        )
        LOGSTORE_JAR.parent.mkdir(parents=True, exist_ok=True)
        partial = LOGSTORE_JAR.with_suffix(".tmp")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as jar:
            jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nCreated-By: fluxo_platform.jvm\n\n")
            for file in sorted(Path(classes).rglob("*.class")):
                jar.write(file, file.relative_to(classes).as_posix())
        partial.replace(LOGSTORE_JAR)
    return LOGSTORE_JAR


def logstore_env() -> dict[str, str]:
    """The environment a local stage needs to commit to S3 tables through the log store."""
    return {"FLUXO_DELTA_LOGSTORE_JAR": str(LOGSTORE_JAR)} if LOGSTORE_JAR.is_file() else {}


def main() -> int:
    print("==> Spark JVM packages (Delta, hadoop-aws; ~700 MB into the shared Ivy cache the first time)", flush=True)
    print("    ready: " + ", ".join(fluxo_spark.warm()), flush=True)
    try:
        print(f"==> Delta log store for S3: {build_logstore()}", flush=True)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        print(f"warning: {detail}\n    without it, two Spark processes committing to one S3 table at the same "
              "moment can lose a commit", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
