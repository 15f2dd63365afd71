"""A partner REST API simulator serving generator data, with switchable faults.

    python -m fluxo_dev.simulator --data DIR --port P [--faults all | error_rate=0.1 ...]

    with start_simulator(data_dir, faults={...}) as sim:   # a real uvicorn server in a child process
        sim.base_url, sim.token, sim.set_faults(...), sim.upsert([...]), sim.versions(), sim.stats()

The app and its fault switches are described in `fluxo_dev.simulator.app`.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .app import ALL_FAULTS, FAULT_DEFAULTS, create_app

__all__ = ["ALL_FAULTS", "FAULT_DEFAULTS", "Simulator", "create_app", "start_simulator"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Simulator:
    """A running simulator process; use as a context manager (stops the process on exit)."""

    def __init__(self, proc: subprocess.Popen, base_url: str, token: str, log: Path | None) -> None:
        self.proc, self.base_url, self.token, self.log = proc, base_url, token, log
        self._http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def connection_uri(self, timeout: float | None = None) -> str:
        """An Airflow connection in JSON form for this server (bearer token in the password)."""
        host, port = self.base_url.removeprefix("http://").split(":")
        conn: dict = {"conn_type": "http", "host": host, "port": int(port), "schema": "http", "password": self.token}
        if timeout is not None:
            conn["extra"] = {"timeout": timeout}
        return json.dumps(conn)

    def set_faults(self, **faults: float) -> dict:
        return self._checked(self._http.post("/_faults", json=faults))

    def clear_faults(self) -> dict:
        return self.set_faults(**{k: v for k, v in FAULT_DEFAULTS.items() if k != "seed"})

    def upsert(self, records: list[dict], raw: list[str] = ()) -> list[dict]:
        """Add or update records; `raw` JSON value texts are appended as malformed records."""
        return self._checked(self._http.post("/_records", json={"records": records, "raw": list(raw)}))["stored"]

    def versions(self) -> dict:
        return self._checked(self._http.get("/_records/versions"))

    def stats(self) -> dict:
        return self._checked(self._http.get("/_stats"))

    @staticmethod
    def _checked(response: httpx.Response):
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        self._http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "Simulator":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_simulator(data_dir: str | Path, faults: dict | None = None, token: str = "", port: int | None = None,
                    log: Path | None = None, startup_timeout: float = 120.0) -> Simulator:
    """Start `python -m fluxo_dev.simulator` on 127.0.0.1 (a free port unless given) and wait until it serves."""
    token = token or secrets.token_urlsafe(24)  # development only: a fresh token per server
    for attempt in range(3):  # a free port can be taken between probing and binding: try another
        try:
            return _start(data_dir, faults, token, port or _free_port(), log, startup_timeout)
        except _ExitedEarly:
            if port or attempt == 2:
                raise
    raise AssertionError("unreachable")


class _ExitedEarly(RuntimeError):
    pass


def _start(data_dir, faults, token: str, port: int, log: Path | None, startup_timeout: float) -> Simulator:
    args = [sys.executable, "-m", "fluxo_dev.simulator", "--data", str(data_dir), "--port", str(port)]
    if faults:
        args += ["--faults", *(f"{k}={v}" for k, v in faults.items())]
    out = open(log, "ab") if log else subprocess.DEVNULL
    # The token goes by environment: not visible in `ps`, and one starting with "-" is not
    # taken for an option (token_urlsafe starts with "-" once in 64 draws).
    env = {**os.environ, "FLUXO_SIMULATOR_TOKEN": token}
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    if log:
        out.close()  # the child holds its own copy
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _ExitedEarly(f"simulator exited with {proc.returncode}" + (f"; see {log}" if log else ""))
        try:
            if httpx.get(f"{base_url}/_health", timeout=1).status_code == 200:
                return Simulator(proc, base_url, token, log)
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"simulator did not answer on {base_url} within {startup_timeout}s")
