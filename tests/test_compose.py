"""docker-compose.yaml: no Docker engine runs here, so the file is checked by parsing it."""

from __future__ import annotations

import re

import yaml

from fluxo_platform.settings import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yaml"


def test_compose_declares_the_whole_stack():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    for name in ("postgres", "s3", "kafka", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "api"):
        assert name in services, f"compose lacks service {name}"
    assert services["api"]["build"]["dockerfile"] == "api/Dockerfile"
    assert (REPO_ROOT / services["api"]["build"]["dockerfile"]).is_file()
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_compose_holds_no_secret_and_publishes_only_on_loopback():
    text = COMPOSE.read_text()
    for var in ("FLUXO_PG_PASSWORD", "FLUXO_S3_SECRET_KEY", "FLUXO_API_JWT_SECRET", "FLUXO_API_CLIENT_SECRET"):
        for use in re.findall(r"\$\{" + var + r"([^}]*)\}", text):
            assert use.startswith(":?"), f"{var} must be required from .env, not defaulted ({use!r})"
    spec = yaml.safe_load(text)
    for name, service in spec["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
