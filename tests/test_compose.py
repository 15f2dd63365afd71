"""docker-compose.yaml against the code: no Docker engine runs here, so the file is read, not started.

What a `docker compose up` would trip on is checked from the code's side: every image and build
context exists, every setting the code reads is set in the service that reads it, every
connection the DAGs use is defined, every database the platform uses is created, published ports
are loopback-only and distinct, every long-running service has a healthcheck and a restart
policy, images are pinned, and .env.example names exactly the variables the file needs.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from fluxo_platform.settings import REPO_ROOT, FluxoSettings

COMPOSE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
ONE_SHOT = ("airflow-init",)


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(spec) -> dict:
    return spec["services"]


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def _interpolated(value: str, dotenv: dict[str, str]) -> str:
    """A compose value with ${VAR...} replaced by .env's value (or the :- default)."""
    def one(m: re.Match) -> str:
        name, op, default = m.group(1), m.group(2) or "", m.group(3) or ""
        return dotenv.get(name) or (default if op == ":-" else "x")
    return re.sub(r"\$\{([A-Z0-9_]+)(:[-?])?([^}]*)\}", one, str(value))


def test_the_whole_stack_is_declared_in_the_official_layout(services):
    for name in ("postgres", "s3", "kafka", "airflow-init", *AIRFLOW_SERVICES, "api", "partner-api",
                 "kafka-producer"):
        assert name in services, f"compose lacks service {name}"
    for name in AIRFLOW_SERVICES:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    # one shared configuration: the JWT secret the api-server checks task tokens with, and where tasks call it
    env = _env(services["airflow-scheduler"])
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert _env(services["airflow-apiserver"])["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW__API_AUTH__JWT_SECRET"]
    mounts = {name: {v.split(":")[1] for v in services[name]["volumes"]} for name in AIRFLOW_SERVICES}
    assert all({"/opt/airflow/logs", "/opt/airflow/config"} <= m for m in mounts.values()), mounts


def test_every_image_is_pinned_and_every_build_and_mounted_file_exists(services):
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (REPO_ROOT / build["context"] / build["dockerfile"]).is_file(), f"{name}: no Dockerfile"
        image = service.get("image", "")
        if not build:
            tag = image.rpartition(":")[2]
            assert ":" in image and tag != "latest" and re.search(r"\d", tag), f"{name}: image {image!r} not pinned"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"
    dockerfile = (REPO_ROOT / "docker/airflow.Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.11$", dockerfile, re.M)
    assert "openjdk-17" in dockerfile and "-c /opt/fluxo/constraints.txt" in dockerfile
    for copied in re.findall(r"^COPY --chown=\S+ (.+) /opt/fluxo/\S*$", dockerfile, re.M):
        for path in copied.split():
            assert (REPO_ROOT / path).exists(), f"the Dockerfile copies missing {path}"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in _env(services["kafka"])["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper


def test_every_setting_the_code_reads_is_set_where_it_is_read(services):
    airflow_env = _env(services["airflow-scheduler"])
    for field, info in FluxoSettings.model_fields.items():
        assert f"FLUXO_{field.upper()}" in airflow_env, (
            f"FluxoSettings.{field} (FLUXO_{field.upper()}) is not set in x-airflow-common's environment")
    import sys

    sys.path.insert(0, str(REPO_ROOT / "api"))
    from app.core.config import Settings

    api_env = _env(services["api"])
    for field, info in Settings.model_fields.items():
        if info.is_required():
            names = info.validation_alias.choices if info.validation_alias else [f"FLUXO_API_{field.upper()}"]
            assert set(names) & set(api_env), f"the API's required setting {field} ({names}) is not set"


def test_every_connection_the_dags_use_is_defined(services):
    from fluxo_tasks.pipeline import connection_ids

    dotenv = {"FLUXO_PG_PASSWORD": "pw"}
    env = _env(services["airflow-scheduler"])
    for conn_id in connection_ids():
        key = f"AIRFLOW_CONN_{conn_id.upper()}"
        assert key in env, f"connection {conn_id} is not defined for Airflow"
        conn = json.loads(_interpolated(env[key], dotenv))
        host = conn.get("host") or conn.get("extra", {}).get("endpoint_url", "") \
            or conn.get("extra", {}).get("bootstrap.servers", "")
        assert any(service in host for service in services), f"{conn_id} points at no compose service: {host}"


def test_every_database_the_platform_uses_is_created(services):
    from fluxo_dev.stack.postgres import DATABASES

    created = {_env(services["postgres"])["POSTGRES_DB"]}
    init = next(v for v in services["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in v)
    script = (REPO_ROOT / init.split(":")[0]).read_text()
    created |= set(re.search(r"for db in ([^;]+);", script).group(1).split())
    assert set(DATABASES) <= created
    used = " ".join(str(v) for v in _env(services["airflow-scheduler"]).values())
    for database in DATABASES:
        assert f"/{database}" in used or f'"schema": "{database}"' in used, f"no service uses database {database}"


def test_ports_are_loopback_only_and_distinct(services):
    published = []
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
            published.append(str(port).split(":")[1])
    assert len(published) == len(set(published)), f"two services publish one host port: {sorted(published)}"


def test_long_running_services_have_healthchecks_and_restart_policies(services):
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no"
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service.get("restart") in ("always", "unless-stopped"), f"{name} has no restart policy"


def test_env_example_names_exactly_what_the_file_needs_and_holds_no_secret():
    text = COMPOSE.read_text()
    needed = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))  # $${X} is the container's own
    example = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                   if line and not line.startswith("#"))
    assert needed == set(example), f"missing: {needed - set(example)}, unused: {set(example) - needed}"
    for var in re.findall(r"\$\{([A-Z0-9_]+):\?", text):
        assert example[var] == "", f"{var} is a secret: .env.example must leave it empty"
        for use in re.findall(r"(?<!\$)\$\{" + var + r"([^}]*)\}", text):
            assert use.startswith(":?"), f"{var} must be required from .env, not defaulted ({use!r})"
    assert ".env" in (REPO_ROOT / ".gitignore").read_text().split()


def test_dotenv_fills_every_secret(tmp_path):
    from fluxo_dev.stack.__main__ import dotenv
    from fluxo_dev.stack.credentials import Credentials

    filled = dict(line.split("=", 1) for line in dotenv(Credentials(tmp_path)).splitlines()
                  if line and not line.startswith("#"))
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text()))
    assert all(filled[var] for var in required)
    from cryptography.fernet import Fernet

    Fernet(filled["AIRFLOW_FERNET_KEY"])  # a valid key
