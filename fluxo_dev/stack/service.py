"""What every embedded service shares: its folder, pid/log/state files, reuse and stop."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fluxo_dev.stack.credentials import Credentials
from fluxo_dev.stack.process import HOST, StackError, free_ports, pid_alive, read_pid, stop_pid, write_private

Progress = Callable[[str], None]
_START_ATTEMPTS = 3
# What the servers say when a port they were given is already bound (PostgreSQL, Kafka, Java: "already in
# use"; SeaweedFS: "Port allocation failed ... is not available").
_PORT_TAKEN = re.compile(r"already in use|Port allocation failed|BindException", re.IGNORECASE)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # running | stopped | external
    endpoint: str
    pid: int | None = None


class Service:
    """One local server living under `<home>/services/<name>/`."""

    name: str = ""
    label: str = ""  # shown in progress lines, e.g. "postgresql"
    executable: str = ""  # must appear in the process command line (guards against reused pids)
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 15.0
    port_names: tuple[str, ...] = ("port",)
    preferred_ports: tuple[int, ...] = ()  # used when the service never ran here (or its last ports are taken)

    def __init__(self, home: Path, credentials: Credentials, progress: Progress):
        self.home = home
        self.credentials = credentials
        self.progress = progress
        self.dir = home / "services" / self.name
        self.pid_file = self.dir / f"{self.name}.pid"
        self.log_file = self.dir / f"{self.name}.log"
        self.state_file = self.dir / "state.json"

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def save_state(self, **values) -> None:
        write_private(self.state_file, json.dumps(values, indent=2) + "\n", mode=0o644)

    def pid(self) -> int | None:
        """The pid of the running server, or None (a stale pid file counts as stopped)."""
        pid = read_pid(self.pid_file)
        return pid if pid_alive(pid, self.executable) else None

    @property
    def port(self) -> int:
        return int(self.state()["port"])

    def endpoint(self) -> str:
        port = self.state().get("port")
        return f"{HOST}:{port}" if port else ""

    def status(self) -> ServiceStatus:
        pid = self.pid()
        return ServiceStatus(self.name, "running" if pid else "stopped", self.endpoint(), pid)

    # -- lifecycle -----------------------------------------------------------------------------
    def ensure_running(self) -> None:
        pid = self.pid()
        if pid:
            self.progress(f"{self.label} already running on {self.endpoint()} (pid {pid}), reused")
        else:
            previous = self.state()
            preferred = [previous.get(n) or dict(zip(self.port_names, self.preferred_ports)).get(n, 0)
                         for n in self.port_names]
            for attempt in range(1, _START_ATTEMPTS + 1):
                assigned = dict(zip(self.port_names, free_ports(len(self.port_names), preferred), strict=True))
                where = f" on {HOST}:{assigned['port']}" if "port" in assigned else ""
                self.progress(f"starting {self.label}{where} ...")
                started = time.monotonic()
                self.dir.mkdir(parents=True, exist_ok=True)
                try:
                    self.start(assigned)
                    break
                except StackError as exc:
                    # A port found free can be taken before the server binds it (another process's
                    # outgoing connection, another stack starting at the same moment): try other ports.
                    if attempt == _START_ATTEMPTS or not _PORT_TAKEN.search(str(exc)):
                        raise
                    self.progress(f"{self.label}: a port was taken as it started; trying other ports")
                    self.stop()
                    preferred = []
            self.progress(f"{self.label} ready in {time.monotonic() - started:.1f}s")
        self.provision()

    def start(self, ports: dict[str, int]) -> None:
        raise NotImplementedError

    def provision(self) -> None:
        """Create what the platform expects inside the server (idempotent)."""

    def stop(self) -> bool:
        pid = self.pid()
        stopped = stop_pid(pid, sig=self.stop_signal, timeout=self.stop_timeout) if pid else False
        if stopped:
            self.progress(f"stopped {self.label} (pid {pid})")
        self.pid_file.unlink(missing_ok=True)
        return stopped
