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

from fluxo_platform.jvm import logstore_env
from fluxo_platform.stage_pool import POOL_SETTING
from fluxo_platform.settings import REPO_ROOT, default_home
from fluxo_dev.stack import airflow
from fluxo_dev.stack.credentials import Credentials
from fluxo_dev.stack.feeds import KafkaProducer, PartnerApi
from fluxo_dev.stack.java import java_home
from fluxo_dev.stack.kafka import Kafka, create_topic
from fluxo_dev.stack.postgres import AIRFLOW_DB, SOURCE_DB, Postgres
from fluxo_dev.stack.process import HOST, StackError, write_private
from fluxo_dev.stack.s3 import LAKE_BUCKET, REGION, S3, create_buckets, s3_client
from fluxo_dev.stack.service import Progress, Service
from fluxo_dev.stack.spark_connect import SparkConnect
from fluxo_dev.stack.stage_pool import StagePool

API_CLIENT_ID = "fluxo-demo"

# Setting one of these in the process environment replaces the embedded service.
EXTERNAL_SETTING = {
    "postgres": "FLUXO_DATABASE_URL",
    "kafka": "FLUXO_KAFKA_BOOTSTRAP",
    "s3": "FLUXO_S3_ENDPOINT",
    "spark": "FLUXO_SPARK_REMOTE",
}
# The secrets of .env (docker-compose.yaml) and the credential each one is generated as.
DOTENV_SECRETS = {
    "FLUXO_PG_PASSWORD": "postgres_password", "FLUXO_S3_ACCESS_KEY": "s3_access_key",
    "FLUXO_S3_SECRET_KEY": "s3_secret_key", "FLUXO_TOKEN_SALT": "token_salt",
    "FLUXO_PARTNER_API_TOKEN": "partner_api_token", "FLUXO_API_CLIENT_SECRET": "api_client_secret", "AIRFLOW_JWT_SECRET": "airflow_jwt_secret",
    "AIRFLOW_SECRET_KEY": "airflow_secret_key", "AIRFLOW_FERNET_KEY": "airflow_fernet_key",
    "AIRFLOW_ADMIN_PASSWORD": "airflow_admin_password",
}
# A real partner API (its Airflow connection) replaces the simulator; a real Kafka gets no test events.
FEED_REPLACED_BY = {"partner-api": "AIRFLOW_CONN_FLUXO_PARTNER_API", "kafka-producer": "FLUXO_KAFKA_BOOTSTRAP"}


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


def provision(settings=None) -> None:
    """Create the buckets, the topic and the OLTP schema on the services the settings name (idempotent).

    For services this module does not run: the compose stack's init job, an external S3 or Kafka.
    """
    from fluxo_dev.source_db import ensure_schema
    from fluxo_platform.settings import FluxoSettings

    s = settings or FluxoSettings()
    create_buckets(s3_client(s.s3_endpoint, s.s3_access_key, s.s3_secret_key))
    create_topic(s.kafka_bootstrap)
    ensure_schema(s.source_database_url)


class Stack:
    def __init__(self, home: Path | str | None = None, progress: Progress | None = None):
        self.home = Path(home).resolve() if home else default_home()
        self.progress = progress or _stderr
        self.credentials = Credentials(self.home)
        self.postgres = Postgres(self.home, self.credentials, self.progress)
        self.kafka = Kafka(self.home, self.credentials, self.progress)
        self.s3 = S3(self.home, self.credentials, self.progress)
        # the warm Spark every local stage connects to; it needs the S3 server's address, so it starts last
        self.spark = SparkConnect(self.home, self.credentials, self.progress, environment=self.compose_env)
        self.services: dict[str, Service] = {"postgres": self.postgres, "kafka": self.kafka, "s3": self.s3,
                                             "spark": self.spark}
        # warm interpreters the local stage runs start in (no external replacement: a run without it starts a process)
        self.stage_pool = StagePool(self.home, self.credentials, self.progress, environment=self.compose_env)
        # sources for a local run (started by `up` from the CLI, not by the test sessions' stacks)
        self.partner_api = PartnerApi(self.home, self.credentials, self.progress)
        producer = KafkaProducer(self.home, self.credentials, self.progress,
                                 bootstrap=lambda: self.external("kafka") or self.kafka.endpoint())
        self.feeds: dict[str, Service] = {"partner-api": self.partner_api, "kafka-producer": producer}
        self.airflow: dict[str, airflow.AirflowComponent] = {
            component.name: component(self.home, self.credentials, self.progress, environment=self.airflow_env)
            for component in airflow.COMPONENTS
        }

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
        return {"postgres": self.postgres.url, "kafka": self.kafka.endpoint, "s3": self.s3.url,
                "spark": self.spark.url}[name]()

    # -- lifecycle -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self):
        """One up/down at a time per home, across processes (two test sessions, demo + CLI)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".stack.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def up(self, feeds: bool = False) -> dict[str, str]:
        """Start (or reuse) every service not replaced by an external one; write and return stack.env.

        `feeds`: also the partner-API simulator and the Kafka producer, and the OLTP schema
        (what a run triggered by hand needs to find data in every source).
        """
        with self._exclusive():
            env = self._up()
            if feeds:
                env = self._start_feeds()
            return env

    def start_airflow(self, extra_env: dict[str, str] | None = None, feeds: bool = True,
                      ) -> tuple[dict[str, str], tuple[str, str]]:
        """`up` (with feeds), the migrations, then Airflow's components; returns (stack.env, (user, password)).

        `extra_env` goes to the Airflow components only (a test's webhook URL, a shorter deadline).
        """
        with self._exclusive():
            self._up()
            if feeds:
                self._start_feeds()
            login = airflow.write_login(self.home, self.credentials)
            self._airflow_extra = dict(extra_env or {})
            airflow.migrate_databases(self.airflow_env())
            for component in self.airflow.values():
                component.ensure_running()
            return self._write_env(), login

    def stop_airflow(self) -> None:
        with self._exclusive():
            self._stop_airflow()

    def _stop_airflow(self) -> None:
        """Every component at once: each waits up to 30 s for its processes (tasks, uvicorn workers) to end."""
        with ThreadPoolExecutor(len(self.airflow)) as pool:
            for future in [pool.submit(component.stop) for component in self.airflow.values()]:
                future.result()

    def airflow_env(self) -> dict[str, str]:
        """What Airflow's components run with: this process's environment, then the stack's."""
        return {**os.environ, **self.compose_env(), **getattr(self, "_airflow_extra", {})}

    def _start_feeds(self) -> dict[str, str]:
        from fluxo_dev.source_db import ensure_schema

        ensure_schema(self.compose_env()["FLUXO_SOURCE_DATABASE_URL"])
        for name, service in self.feeds.items():
            if self._feed_replaced(name):
                self.progress(f"{service.label}: not started, {FEED_REPLACED_BY[name]} names a real source")
            else:
                service.ensure_running()
        return self._write_env()

    def _feed_replaced(self, name: str) -> bool:
        if name == "kafka-producer":
            return self.external("kafka") is not None
        given = os.environ.get(FEED_REPLACED_BY[name])
        return bool(given) and not (self.partner_api.pid() and given == self.partner_api.connection())

    def _write_env(self) -> dict[str, str]:
        env = self.compose_env()
        (self.home / "airflow").mkdir(exist_ok=True)
        lines = ["# Written by `python -m fluxo_dev.stack up` (development only: generated local secrets)."]
        lines += [f"{key}={shlex.quote(value)}" for key, value in env.items()]
        write_private(self.env_file, "\n".join(lines) + "\n")
        return env

    def _up(self) -> dict[str, str]:
        self.credentials.ensure_all()
        local = []
        for name, service in self.services.items():
            endpoint = self.external(name)
            if endpoint:
                self.progress(f"{service.label}: external {EXTERNAL_SETTING[name]}={endpoint}, not started")
            else:
                local.append(service)
        stores = [s for s in local if s is not self.spark]
        if stores:
            with ThreadPoolExecutor(len(stores)) as pool:
                futures = [(s, pool.submit(s.ensure_running)) for s in stores]
                failures = [(s, f.exception()) for s, f in futures if f.exception()]
            if failures:
                raise StackError(
                    "\n".join(f"{s.label} failed: {exc}" for s, exc in failures)
                ) from failures[0][1]
        if self.spark in local:
            self.spark.ensure_running()
        self.stage_pool.ensure_running()
        return self._write_env()

    def down(self, purge: bool = False) -> None:
        """Stop every local service gracefully; `purge` also deletes their data (secrets stay)."""
        if not self.home.exists():
            return
        with self._exclusive():
            # Airflow first, then what feeds the sources, then the stores
            self._stop_airflow()
            for feed in self.feeds.values():
                feed.stop()
            with ThreadPoolExecutor(len(self.services) + 1) as pool:
                for future in [pool.submit(s.stop) for s in (self.stage_pool, *self.services.values())]:
                    future.result()
            if purge:
                shutil.rmtree(self.home / "services", ignore_errors=True)
                self.progress(f"deleted service data under {self.home / 'services'}")

    def status(self) -> dict[str, dict]:
        report = {}
        every = {**self.services, self.stage_pool.name: self.stage_pool, **self.feeds, **self.airflow}
        for name, service in every.items():
            endpoint = self.external(name) if name in EXTERNAL_SETTING else None
            if endpoint:
                report[name] = {"state": "external", "endpoint": endpoint, "pid": None}
            else:
                s = service.status()
                web = name in ("s3", "partner-api", "airflow-api-server")
                shown = f"http://{s.endpoint}" if web and s.endpoint else s.endpoint
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

        # The lake lives in the S3 server, as on AWS; FLUXO_LAKE_ROOT set to a folder (or another
        # bucket) wins. Without our own S3 server the folder under the home is the default.
        env["FLUXO_LAKE_ROOT"] = os.environ.get("FLUXO_LAKE_ROOT") or (
            str(self.home / "lake") if self.external("s3") else f"s3://{LAKE_BUCKET}/lake"
        )

        env.update(logstore_env())
        # where local stages run: the stack's warm Spark (or the cluster FLUXO_SPARK_REMOTE names)
        spark = self.external("spark") or (self.spark.url() if self.spark.pid() else "")
        if spark:
            env["FLUXO_SPARK_REMOTE"] = spark
        if self.stage_pool.pid():
            env[POOL_SETTING] = str(self.stage_pool.socket_path)
        try:
            env["JAVA_HOME"] = str(java_home())
        except StackError as exc:
            self.progress(f"warning: {exc}")

        env["FLUXO_TOKEN_SALT"] = self.credentials.get("token_salt")
        # the API signs RS256 tokens with the keys in this folder (HS256 with FLUXO_API_JWT_SECRET only
        # when FLUXO_API_JWT_ALGORITHM=HS256 is set)
        env["FLUXO_API_SIGNING_KEYS_DIR"] = str(self.home / "api" / "signing-keys")
        env["FLUXO_API_JWT_SECRET"] = self.credentials.get("api_jwt_secret")
        env["FLUXO_API_CLIENT_ID"] = API_CLIENT_ID
        env["FLUXO_API_CLIENT_SECRET"] = self.credentials.get("api_client_secret")

        # Spark (the local Glue runs) binds loopback instead of the host's first interface
        env["SPARK_LOCAL_IP"] = HOST
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
        if self.partner_api.pid():
            env["AIRFLOW_CONN_FLUXO_PARTNER_API"] = self.partner_api.connection()
        api_server = self.airflow["airflow-api-server"].state().get("port")
        env |= airflow.airflow_config(self.home, self.credentials, api_server)
        return env

