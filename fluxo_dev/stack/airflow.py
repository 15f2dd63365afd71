"""Airflow's components as stack services: api-server, scheduler, dag-processor, triggerer, on 127.0.0.1.

`python -m fluxo_dev.stack airflow` (`make airflow`) migrates the metadata and warehouse
databases, then starts each component detached, with the stack's environment and one shared
configuration (JWT secret, execution API URL, login). Nothing listens beyond loopback: the
api-server binds 127.0.0.1, and the scheduler and triggerer run without their log servers
(8793/8794 bind every interface and cannot be told otherwise); they are not needed when every
component shares this machine's log folder, which the api-server reads directly.
`python -m fluxo_dev.stack down` stops them with the other services.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fluxo_dev.stack.process import HOST, StackError, log_tail, pid_alive, port_is_open, spawn, wait_for, write_private
from fluxo_dev.stack.service import Service

ADMIN_USER = "admin"
AIRFLOW_BIN = Path(sys.executable).parent / "airflow"


def airflow_config(home: Path, credentials, api_port: int | None) -> dict[str, str]:
    """Airflow settings every component shares (AIRFLOW__SECTION__KEY), loopback only."""
    airflow_home = home / "airflow"
    env = {
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": credentials.get("airflow_jwt_secret"),
        "AIRFLOW__API__SECRET_KEY": credentials.get("airflow_secret_key"),
        "AIRFLOW__CORE__FERNET_KEY": credentials.get("airflow_fernet_key"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": HOST,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # the dag-processor's first parse writes its own version of a DAG even when `airflow dags test`
        # (make demo, make bench) serialized it seconds before: that one has no deadline alert
        "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0",
        # a task supervisor that sees its task's sockets close just before the process exits sleeps
        # this long before it notices the exit and reports the state (measured: one of the four
        # parallel extract tasks of each run ended 5.0 s after its last log line at the default 5, load 1.9-3.2)
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        # an idle scheduler loop sleeps this long before it looks for the next task to queue: each of a
        # run's hops from one task to the next took 0.53 s on average at the default 1 s, 0.26 s at
        # 0.5 s (load 0.6-3.1), for 2.0 s of scheduler CPU a minute when idle instead of 1.0 s
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
    }
    if api_port:
        base = f"http://{HOST}:{api_port}"
        env |= {
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": base,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        }
    return env


class AirflowComponent(Service):
    """One `airflow <command>` process (and its children), in its own process group."""

    executable = "airflow"
    stop_timeout = 30.0
    command: tuple[str, ...] = ()
    port_names = ()

    def __init__(self, *args, environment: Callable[[], dict[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.environment = environment  # the stack's environment, computed when the component starts

    def start(self, ports: dict[str, int]) -> None:
        self.save_state(**ports)  # the api-server's port is part of the environment it starts with
        pid = spawn([str(AIRFLOW_BIN), *self.command, *self.arguments(ports)], log_file=self.log_file,
                    pid_file=self.pid_file, cwd=self.dir, env=self.environment())
        self.wait_until_ready(pid, ports)

    def arguments(self, ports: dict[str, int]) -> list[str]:
        return []

    def wait_until_ready(self, pid: int, ports: dict[str, int]) -> None:
        if wait_for(lambda: not pid_alive(pid), timeout=3):
            raise StackError(f"airflow {' '.join(self.command)} exited at once\n{log_tail(self.log_file)}")

    def stop(self) -> bool:
        """SIGTERM the whole process group (uvicorn workers, executor workers, task supervisors)."""
        pid = self.pid()
        if pid:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not wait_for(lambda: not pid_alive(pid), timeout=self.stop_timeout, interval=0.1):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.progress(f"stopped {self.label} (pid {pid})")
        self.pid_file.unlink(missing_ok=True)
        return bool(pid)


class ApiServer(AirflowComponent):
    name, label, command = "airflow-api-server", "airflow api-server", ("api-server",)
    port_names = ("port",)
    preferred_ports = (8080,)

    def arguments(self, ports: dict[str, int]) -> list[str]:
        return ["--host", HOST, "--port", str(ports["port"])]

    def wait_until_ready(self, pid: int, ports: dict[str, int]) -> None:
        import httpx

        health = f"http://{HOST}:{ports['port']}/api/v2/monitor/health"
        answered = wait_for(lambda: not pid_alive(pid) or httpx.get(health, timeout=2).status_code == 200,
                            timeout=180, interval=0.5)
        if not (answered and pid_alive(pid) and port_is_open(ports["port"])):
            raise StackError(f"the Airflow api-server does not answer on {health}\n{log_tail(self.log_file)}")


class Scheduler(AirflowComponent):
    name, label, command = "airflow-scheduler", "airflow scheduler", ("scheduler", "--skip-serve-logs")


class DagProcessor(AirflowComponent):
    """Ready once it has parsed the DAG files: until then a trigger gets the DAG version another
    process serialized, e.g. `airflow dags test` of `make demo`, which leaves out the deadline alert."""

    name, label, command = "airflow-dag-processor", "airflow dag-processor", ("dag-processor",)
    parse_timeout = 180.0

    def start(self, ports: dict[str, int]) -> None:
        import psycopg

        env = self.environment()
        folder = env.get("AIRFLOW__CORE__DAGS_FOLDER", "")

        def parsed(conn, since) -> bool:
            # every DAG of the DAGs folder parsed since the start (and at least one on a new database)
            fresh, old = conn.execute(
                "SELECT count(*) FILTER (WHERE last_parsed_time >= %(since)s),"
                " count(*) FILTER (WHERE last_parsed_time IS NULL OR last_parsed_time < %(since)s)"
                " FROM dag WHERE NOT is_stale AND starts_with(fileloc, %(folder)s)",
                {"since": since, "folder": folder}).fetchone()
            return fresh > 0 and old == 0

        # autocommit: each poll sees the latest parse
        with psycopg.connect(metadata_database_url(env), autocommit=True) as conn:
            since = conn.execute("SELECT now()").fetchone()[0]
            super().start(ports)
            pid = self.pid()
            done = wait_for(lambda: not pid_alive(pid) or parsed(conn, since),
                            timeout=self.parse_timeout, interval=0.5)
        if not pid_alive(pid):
            raise StackError(f"{self.label} exited while parsing the DAGs\n{log_tail(self.log_file)}")
        if not done:
            self.progress(f"{self.label}: the DAGs are not all parsed after {self.parse_timeout:.0f}s; "
                          f"see {self.log_file} (an import error?)")


class Triggerer(AirflowComponent):
    name, label, command = "airflow-triggerer", "airflow triggerer", ("triggerer", "--skip-serve-logs")


COMPONENTS = (ApiServer, Scheduler, DagProcessor, Triggerer)


def write_login(home: Path, credentials) -> tuple[str, str]:
    """The admin login of the simple auth manager (development only), kept in the passwords file."""
    password = credentials.get("airflow_admin_password")
    path = home / "airflow" / "passwords.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, f'{{"{ADMIN_USER}": "{password}"}}\n')
    return ADMIN_USER, password


def metadata_database_url(env: dict[str, str]) -> str:
    """Airflow's metadata database of a stack environment as a plain postgresql:// URL (for psycopg)."""
    return env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg2://", "postgresql://")


def rest_client(env: dict[str, str], login: tuple[str, str]):
    """An httpx client of Airflow's REST API (`/api/v2`) with a bearer token of the stack's admin login."""
    import httpx

    base = env["AIRFLOW__API__BASE_URL"]
    user, password = login
    token = httpx.post(f"{base}/auth/token", json={"username": user, "password": password}).json()["access_token"]
    return httpx.Client(base_url=f"{base}/api/v2", timeout=30, headers={"Authorization": f"Bearer {token}"})


def migrate_databases(env: dict[str, str]) -> None:
    """The warehouse migrations, then Airflow's metadata database."""
    from fluxo_platform.warehouse import migrate

    migrate(env["FLUXO_DATABASE_URL"])
    done = subprocess.run([str(AIRFLOW_BIN), "db", "migrate"], env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise StackError("airflow db migrate failed:\n" + done.stderr[-3000:])
