"""Shared fixtures: a local Spark session and the real local services.

The services (PostgreSQL, the Kafka-protocol broker, the S3 server) are started
once per test session by `fluxo_dev.stack` in a home of their own under
`.fluxo/test-home`, so tests never touch the demo's data.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

from pathlib import Path

import pytest

from fluxo_platform.settings import REPO_ROOT

# py4j logs "closing down" from garbage collection after pytest has closed its streams
logging.getLogger("py4j").setLevel(logging.WARNING)

TEST_HOMES = REPO_ROOT / ".fluxo" / "test-homes"
# One home per test session, so concurrent sessions never stop each other's services.
TEST_HOME = TEST_HOMES / str(os.getpid())
AIRFLOW_BIN = Path(sys.executable).parent / "airflow"


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("fluxo-tests")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.adaptive.enabled", "true")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def stack_env():
    """Start the real services once; export their endpoints into os.environ."""
    from fluxo_platform.settings import get_settings
    from fluxo_dev.stack import Stack

    _remove_stale_homes(Stack)
    stack = Stack(home=TEST_HOME)
    env = stack.up()
    saved = dict(os.environ)
    os.environ.update(env)
    os.environ["FLUXO_HOME"] = str(TEST_HOME)
    os.environ["FLUXO_LAKE_ROOT"] = str(TEST_HOME / "lake")
    os.environ["FLUXO_SPARK_DRIVER_MEMORY"] = "2g"
    os.environ["FLUXO_SPARK_SHUFFLE_PARTITIONS"] = "4"
    get_settings.cache_clear()
    yield dict(os.environ)
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()
    stack.down()
    shutil.rmtree(TEST_HOME, ignore_errors=True)


def _remove_stale_homes(stack_cls) -> None:
    """Stop and delete the services of test sessions that are no longer running."""
    for home in TEST_HOMES.glob("*") if TEST_HOMES.exists() else []:
        try:
            os.kill(int(home.name), 0)
            continue
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        stack_cls(home=home).down()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def warehouse_url(stack_env) -> str:
    """The warehouse database of the local stack, migrated to the latest version."""
    from fluxo_platform.warehouse import migrate

    url = stack_env["FLUXO_DATABASE_URL"]
    migrate(url)
    return url


@pytest.fixture(scope="session")
def airflow_env(stack_env, warehouse_url) -> dict:
    """Environment of an Airflow whose metadata DB is migrated (for `airflow dags test`)."""
    env = dict(stack_env)
    subprocess.run(
        [str(AIRFLOW_BIN), "db", "migrate"], env=env, check=True, capture_output=True, timeout=600
    )
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def api_server(stack_env, warehouse_url):
    """The FastAPI service on a real uvicorn server: (base URL, client id, client secret)."""
    import time

    import httpx

    port = free_port()
    log = open(TEST_HOME / "api-test.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--app-dir", str(REPO_ROOT / "api"),
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=stack_env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("API did not become healthy: " + (TEST_HOME / "api-test.log").read_text()[-2000:])
    yield base, stack_env["FLUXO_API_CLIENT_ID"], stack_env["FLUXO_API_CLIENT_SECRET"]
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def reset_sources(stack_env: dict, warehouse_url: str) -> None:
    """The services are shared between tests: an empty OLTP table and no extraction state, so a
    DAG run sees exactly the day the test puts in the sources."""
    import psycopg

    from fluxo_dev.source_db import ensure_schema

    with psycopg.connect(stack_env["FLUXO_SOURCE_DATABASE_URL"]) as conn:
        conn.execute("DROP SCHEMA IF EXISTS payments CASCADE")
    ensure_schema(stack_env["FLUXO_SOURCE_DATABASE_URL"])
    with psycopg.connect(warehouse_url) as conn:
        for table in ("extract.watermark", "extract.batch", "extract.s3_object"):
            conn.execute(f"DELETE FROM {table}")
