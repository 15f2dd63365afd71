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
def spark(stack_env):
    """One session for every test in the process, on the stack's warm Spark (Spark Connect) that the
    tests' stage runs use too: no JVM of the test process's own."""
    from fluxo.spark import remote_session

    session = remote_session(stack_env["FLUXO_SPARK_REMOTE"])
    session.conf.set("spark.sql.shuffle.partitions", "4")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def stack_env():
    """Start the real services once; export their endpoints into os.environ."""
    from fluxo_platform.settings import get_settings
    from fluxo_dev.stack import Stack

    _remove_stale_homes(Stack)
    # the suite's first Spark tests warm the server up as they go; a background warm-up would only
    # compete with them (tests/test_stack.py runs the warm-up itself)
    os.environ.setdefault("FLUXO_SPARK_WARMUP", "false")
    stack = Stack(home=TEST_HOME)
    env = stack.up()
    _session_stacks.append(stack)
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


_session_stacks: list = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test says which of the session's services had stopped, with the end of its log: a
    server that died mid-session fails every later test that uses it, and its home is deleted at
    the end of the session."""
    from fluxo_dev.stack.process import log_tail

    report = (yield).get_result()
    if report.failed and _session_stacks:
        for service in _session_stacks[0].services.values():
            if service.pid_file.exists() and service.pid() is None:
                report.sections.append((f"session service {service.name} is not running",
                                        f"{service.log_file}:\n{log_tail(service.log_file, 40)}"))


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


class JwksServer:
    """A stand-in identity provider's JWKS endpoint on 127.0.0.1 (the keys are the test's to change)."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        self.keys: list[dict] = []
        self.fetches = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class ApiService:
    """A real uvicorn process running the API on the test warehouse."""

    ISSUER, AUDIENCE, EXTERNAL_ISSUER = "fluxo", "fluxo-api", "https://idp.test.invalid/realms/fluxo"

    def __init__(self, env: dict, home: Path, idp: JwksServer | None = None, **settings: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.home = home
        self.keys_dir = home / "signing-keys"
        self.lake_root = str(home / "lake")
        self.log_path = home / "api.log"
        self.idp = idp
        self.env = {k: v for k, v in env.items() if not k.startswith("FLUXO_API_")}
        self.env.update({
            "FLUXO_API_CLIENT_ID": env["FLUXO_API_CLIENT_ID"], "FLUXO_API_CLIENT_SECRET": env["FLUXO_API_CLIENT_SECRET"],
            "FLUXO_API_SIGNING_KEYS_DIR": str(self.keys_dir), "FLUXO_API_PUBLIC_BASE_URL": self.base_url,
            "FLUXO_API_LAKE_ROOT": self.lake_root, "FLUXO_API_CACHE_TTL_SECONDS": "0",
            "FLUXO_API_CLIENT_STATE_CACHE_SECONDS": "0", "FLUXO_API_KEY_RELOAD_SECONDS": "1",
            "FLUXO_API_LOCKOUT_THRESHOLD": "3", "FLUXO_API_LOCKOUT_SECONDS": "2",
            "FLUXO_API_TOKEN_RATE_PER_SECOND": "1000", "FLUXO_API_TOKEN_RATE_BURST": "1000",
            "FLUXO_API_AUDIT_FLUSH_SECONDS": "0.05", "FLUXO_API_ARGON2_MEMORY_KIB": "8192",
        })
        if idp is not None:
            self.env.update({"FLUXO_API_EXTERNAL_ISSUER": self.EXTERNAL_ISSUER, "FLUXO_API_EXTERNAL_JWKS_URL": idp.url,
                             "FLUXO_API_EXTERNAL_AUDIENCE": self.AUDIENCE, "FLUXO_API_JWKS_MIN_REFRESH_SECONDS": "0.2"})
        self.env.update(settings)
        self.client_id = self.env["FLUXO_API_CLIENT_ID"]
        self.client_secret = self.env["FLUXO_API_CLIENT_SECRET"]
        self.process = None

    def start(self, ready_path: str = "/readyz", timeout: float = 60) -> ApiService:
        import time

        import httpx

        self.home.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--app-dir", str(REPO_ROOT / "api"), "--host",
             "127.0.0.1", "--port", str(self.port), "--no-access-log"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("API server exited:\n" + self.log_path.read_text(errors="replace")[-4000:])
            try:
                if httpx.get(self.base_url + ready_path, timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"API did not answer {ready_path}: " + self.log_path.read_text(errors="replace")[-4000:])

    def wait_for_client(self, timeout: float = 30) -> None:
        """The development client is created in the background at start-up; wait until it works."""
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = httpx.post(self.base_url + "/auth/token", data={
                "grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.client_secret})
            if response.status_code == 200:
                return
            time.sleep(0.3)
        raise RuntimeError("the development client was not created: " + self.log_path.read_text()[-3000:])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    # -- helpers for the API tests ------------------------------------------------------------
    def token_response(self, client_id: str, client_secret: str, **form: str):
        import uuid

        import httpx

        body = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret, **form}
        return httpx.post(self.base_url + "/auth/token", data=body, headers={"X-Request-ID": f"test-{uuid.uuid4().hex}"},
                          timeout=30)

    def token(self, client_id: str, client_secret: str, **form: str) -> str:
        response = self.token_response(client_id, client_secret, **form)
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def create_client(self, name: str, *scopes: str) -> str:
        """A new client made with the CLI; returns its secret."""
        done = self.cli("clients", "create", name, "--scopes", *scopes)
        assert done.returncode == 0, done.stderr
        return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)["client_secret"]

    def new_client(self, prefix: str, *scopes: str) -> tuple[str, str]:
        """(client id, secret) of a new client named after `prefix`."""
        import uuid

        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        return name, self.create_client(name, *scopes)

    def bearer(self, prefix: str, *scopes: str) -> dict[str, str]:
        """Authorization header of a token of a new client with these scopes."""
        return {"Authorization": f"Bearer {self.token(*self.new_client(prefix, *scopes))}"}

    def signing_key(self):
        """(private key, kid) of the key that signs now."""
        from cryptography.hazmat.primitives import serialization

        newest = max(self.keys_dir.glob("*.pem"))
        return serialization.load_pem_private_key(newest.read_bytes(), password=None), newest.stem

    def claims(self, **overrides) -> dict:
        import uuid
        from datetime import datetime, timedelta, timezone

        now = datetime.now(timezone.utc)
        claims = {"sub": self.client_id, "scope": "metrics:read", "iat": now, "exp": now + timedelta(minutes=5),
                  "iss": self.ISSUER, "aud": self.AUDIENCE, "jti": uuid.uuid4().hex}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: dict | None = None, **overrides) -> str:
        """A token signed with the server's own current key (valid unless the claims say otherwise)."""
        import jwt

        key, kid = self.signing_key()
        return jwt.encode(claims if claims is not None else self.claims(**overrides), key, algorithm="RS256",
                          headers={"kid": kid})

    def audit_rows(self, request_ids: list[str], timeout: float = 15.0) -> dict[str, dict]:
        """The audit rows of these requests (written in batches just after the answers): poll briefly."""
        import time

        import psycopg
        from psycopg.rows import dict_row

        deadline = time.monotonic() + timeout
        with psycopg.connect(self.env["FLUXO_DATABASE_URL"], autocommit=True, row_factory=dict_row) as conn:
            while True:
                rows = conn.execute(
                    "SELECT request_id, principal, method, path, query, status_code, client_ip, duration_ms, detail"
                    " FROM audit.api_access WHERE request_id = ANY(%s)", (list(request_ids),)).fetchall()
                found = {r["request_id"]: r for r in rows}
                if len(found) >= len(set(request_ids)) or time.monotonic() > deadline:
                    return found
                time.sleep(0.1)

    def audit_row(self, request_id: str, timeout: float = 15.0) -> dict:
        row = self.audit_rows([request_id], timeout).get(request_id)
        assert row is not None, f"no audit row for request {request_id}"
        return row

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`python -m app.cli ARGS` with this server's settings."""
        return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO_ROOT / "api", env=self.env,
                              capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def jwks_server():
    server = JwksServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def api_service(stack_env, warehouse_url, jwks_server) -> ApiService:
    """The API on a real uvicorn server, shared by every API test (and the pipeline's)."""
    service = ApiService(stack_env, TEST_HOME / "api", jwks_server).start()
    service.wait_for_client()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def api(api_service) -> ApiService:
    """The shared API server, by its short name in the API tests."""
    return api_service


@pytest.fixture(scope="session")
def api_server(api_service):
    """(base URL, client id, client secret) of the shared API server."""
    return api_service.base_url, api_service.client_id, api_service.client_secret


def reset_sources(stack_env: dict, warehouse_url: str) -> None:
    """The services are shared between tests: an empty OLTP table, an empty landing prefix and no
    extraction state, so a DAG run sees exactly the day the test puts in the sources (the S3
    extractor lands every unseen object of the prefix, whatever its day folder)."""
    import boto3
    import psycopg

    from fluxo_dev.source_db import ensure_schema
    from fluxo_platform.settings import get_settings

    settings = get_settings()
    s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint, region_name=settings.aws_region,
                      aws_access_key_id=settings.s3_access_key, aws_secret_access_key=settings.s3_secret_key)
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.landing_bucket,
                                                                 Prefix=settings.landing_prefix):
            for obj in page.get("Contents", []):
                s3.delete_object(Bucket=settings.landing_bucket, Key=obj["Key"])
    except s3.exceptions.NoSuchBucket:
        pass

    with psycopg.connect(stack_env["FLUXO_SOURCE_DATABASE_URL"]) as conn:
        conn.execute("DROP SCHEMA IF EXISTS payments CASCADE")
    ensure_schema(stack_env["FLUXO_SOURCE_DATABASE_URL"])
    with psycopg.connect(warehouse_url) as conn:
        for table in ("extract.watermark", "extract.batch", "extract.s3_object"):
            conn.execute(f"DELETE FROM {table}")
