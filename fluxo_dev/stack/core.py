"""The local stack as one object: start/reuse the services, write `<home>/stack.env`, stop them."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from fluxo_platform.settings import REPO_ROOT, default_home
from fluxo_dev.stack.credentials import Credentials
from fluxo_dev.stack.java import java_home
from fluxo_dev.stack.kafka import Kafka
from fluxo_dev.stack.postgres import AIRFLOW_DB, SOURCE_DB, Postgres
from fluxo_dev.stack.process import StackError, write_private
from fluxo_dev.stack.s3 import REGION, S3
from fluxo_dev.stack.service import Progress, Service

API_CLIENT_ID = "fluxo-demo"

# Setting one of these in the process environment replaces the embedded service.
EXTERNAL_SETTING = {
    "postgres": "FLUXO_DATABASE_URL",
    "kafka": "FLUXO_KAFKA_BOOTSTRAP",
    "s3": "FLUXO_S3_ENDPOINT",
}


def _stderr(message: str) -> None:
    print(f"[fluxo_dev.stack] {message}", file=sys.stderr, flush=True)


def load_env(home: Path | str | None = None) -> dict[str, str]:
    """The KEY=VALUE pairs of `<home>/stack.env` ({} when `up` never ran)."""
    path = Path(home or default_home()) / "stack.env"
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    env: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ")
        key, _, raw = line.partition("=")
        words = shlex.split(raw)
        env[key.strip()] = words[0] if words else ""
    return env


def _with_database(url: str, database: str, scheme: str | None = None) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}", scheme=scheme or parts.scheme))


def _postgres_connection(url: str) -> str:
    """Airflow's JSON connection form of a postgresql:// URL."""
    parts = urlsplit(url)
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": parts.hostname,
            "port": parts.port or 5432,
            "login": unquote(parts.username or ""),
            "password": unquote(parts.password or ""),
            "schema": parts.path.lstrip("/"),
        }
    )


class Stack:
    def __init__(self, home: Path | str | None = None, progress: Progress | None = None):
        self.home = Path(home).resolve() if home else default_home()
        self.progress = progress or _stderr
        self.credentials = Credentials(self.home)
        self.postgres = Postgres(self.home, self.credentials, self.progress)
        self.kafka = Kafka(self.home, self.credentials, self.progress)
        self.s3 = S3(self.home, self.credentials, self.progress)
        self.services: dict[str, Service] = {"postgres": self.postgres, "kafka": self.kafka, "s3": self.s3}

    @property
    def env_file(self) -> Path:
        return self.home / "stack.env"

    def external(self, name: str) -> str | None:
        """The endpoint that replaces service `name`, or None when we run it ourselves."""
        value = os.environ.get(EXTERNAL_SETTING[name])
        # After `eval "$(python -m fluxo_dev.stack env)"` the variable names our own service: not external.
        if not value or value == self._own_endpoint(name):
            return None
        return value

    def _own_endpoint(self, name: str) -> str | None:
        if not self.services[name].state():
            return None  # never started here
        return {"postgres": self.postgres.url, "kafka": self.kafka.endpoint, "s3": self.s3.url}[name]()

    # -- lifecycle -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self):
        """One up/down at a time per home, across processes (two test sessions, demo + CLI)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".stack.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def up(self) -> dict[str, str]:
        """Start (or reuse) every service not replaced by an external one; write and return stack.env."""
        with self._exclusive():
            return self._up()

    def _up(self) -> dict[str, str]:
        self.credentials.ensure_all()
        local = []
        for name, service in self.services.items():
            endpoint = self.external(name)
            if endpoint:
                self.progress(f"{service.label}: external {EXTERNAL_SETTING[name]}={endpoint}, not started")
            else:
                local.append(service)
        if local:
            with ThreadPoolExecutor(len(local)) as pool:
                futures = [(s, pool.submit(s.ensure_running)) for s in local]
                failures = [(s, f.exception()) for s, f in futures if f.exception()]
            if failures:
                raise StackError(
                    "\n".join(f"{s.label} failed: {exc}" for s, exc in failures)
                ) from failures[0][1]
        env = self.compose_env()
        (self.home / "airflow").mkdir(exist_ok=True)
        lines = ["# Written by `python -m fluxo_dev.stack up` (development only: generated local secrets)."]
        lines += [f"{key}={shlex.quote(value)}" for key, value in env.items()]
        write_private(self.env_file, "\n".join(lines) + "\n")
        return env

    def down(self, purge: bool = False) -> None:
        """Stop every local service gracefully; `purge` also deletes their data (secrets stay)."""
        if not self.home.exists():
            return
        with self._exclusive():
            with ThreadPoolExecutor(len(self.services)) as pool:
                for future in [pool.submit(s.stop) for s in self.services.values()]:
                    future.result()
            if purge:
                shutil.rmtree(self.home / "services", ignore_errors=True)
                self.progress(f"deleted service data under {self.home / 'services'}")

    def status(self) -> dict[str, dict]:
        report = {}
        for name, service in self.services.items():
            endpoint = self.external(name)
            if endpoint:
                report[name] = {"state": "external", "endpoint": endpoint, "pid": None}
            else:
                s = service.status()
                shown = f"http://{s.endpoint}" if name == "s3" and s.endpoint else s.endpoint
                report[name] = {"state": s.state, "endpoint": shown, "pid": s.pid}
        return report

    # -- environment ----------------------------------------------------------------------------
    def compose_env(self) -> dict[str, str]:
        env: dict[str, str] = {"FLUXO_HOME": str(self.home)}

        database_url = self.external("postgres") or self.postgres.url()
        env["FLUXO_DATABASE_URL"] = database_url
        env["FLUXO_SOURCE_DATABASE_URL"] = (
            os.environ.get("FLUXO_SOURCE_DATABASE_URL") if self.external("postgres") else None
        ) or _with_database(database_url, SOURCE_DB)

        bootstrap = self.external("kafka") or self.kafka.endpoint()
        env["FLUXO_KAFKA_BOOTSTRAP"] = bootstrap

        if self.external("s3"):
            env["FLUXO_S3_ENDPOINT"] = self.external("s3")
            env["FLUXO_S3_ACCESS_KEY"] = os.environ.get("FLUXO_S3_ACCESS_KEY", "")
            env["FLUXO_S3_SECRET_KEY"] = os.environ.get("FLUXO_S3_SECRET_KEY", "")
        else:
            env["FLUXO_S3_ENDPOINT"] = self.s3.url()
            env["FLUXO_S3_ACCESS_KEY"] = self.credentials.get("s3_access_key")
            env["FLUXO_S3_SECRET_KEY"] = self.credentials.get("s3_secret_key")

        try:
            env["JAVA_HOME"] = str(java_home())
        except StackError as exc:
            self.progress(f"warning: {exc}")

        env["FLUXO_TOKEN_SALT"] = self.credentials.get("token_salt")
        env["FLUXO_API_JWT_SECRET"] = self.credentials.get("api_jwt_secret")
        env["FLUXO_API_CLIENT_ID"] = API_CLIENT_ID
        env["FLUXO_API_CLIENT_SECRET"] = self.credentials.get("api_client_secret")

        env["AIRFLOW_HOME"] = str(self.home / "airflow")
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
        env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO_ROOT / "plugins")
        env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = _with_database(
            database_url, AIRFLOW_DB, scheme="postgresql+psycopg2"
        )
        env["AIRFLOW_CONN_FLUXO_WAREHOUSE"] = _postgres_connection(database_url)
        env["AIRFLOW_CONN_FLUXO_SOURCE_DB"] = _postgres_connection(env["FLUXO_SOURCE_DATABASE_URL"])
        env["AIRFLOW_CONN_FLUXO_S3"] = json.dumps(
            {
                "conn_type": "aws",
                "login": env["FLUXO_S3_ACCESS_KEY"],
                "password": env["FLUXO_S3_SECRET_KEY"],
                "extra": {"endpoint_url": env["FLUXO_S3_ENDPOINT"], "region_name": REGION},
            }
        )
        # The kafka provider hands the extra dict to confluent-kafka unchanged.
        env["AIRFLOW_CONN_FLUXO_KAFKA"] = json.dumps(
            {"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap, "group.id": "fluxo"}}
        )
        return env

