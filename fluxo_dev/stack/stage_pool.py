"""The stage pool: warm Python interpreters for the local Glue stage runs (fluxo_platform.stage_pool)."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import tempfile
from pathlib import Path

from fluxo_platform.settings import REPO_ROOT
from fluxo_dev.stack.process import MAX_SOCKET_PATH, StackError, log_tail, pid_alive, spawn, wait_for
from fluxo_dev.stack.service import Service

MODULE = "fluxo_platform.stage_pool"
# Idle interpreters kept ready of each kind (fluxo_platform.stage_pool.KINDS); a run finding none
# of its kind free (more stages at once than this) starts a process of its own.
POOL_SIZE = int(os.environ.get("FLUXO_STAGE_POOL_SIZE", "1"))


class StagePool(Service):
    name = "stage-pool"
    label = "stage pool (warm interpreters)"
    executable = MODULE
    port_names = ()

    def __init__(self, *args, environment, scripts: Path = REPO_ROOT / "glue_scripts", size: int = POOL_SIZE, **kwargs):
        super().__init__(*args, **kwargs)
        self._environment, self.scripts, self.size = environment, scripts, size

    @property
    def socket_path(self) -> Path:
        path = self.dir / "pool.sock"
        if len(str(path).encode()) > MAX_SOCKET_PATH:  # a deep home: Unix sockets have a short path limit
            path = Path(tempfile.gettempdir()) / f"fluxo-stage-pool-{hashlib.sha256(bytes(self.dir)).hexdigest()[:16]}.sock"
        return path

    def endpoint(self) -> str:
        return str(self.socket_path) if self.state() else ""

    def start(self, ports: dict[str, int]) -> None:
        env = {**os.environ, **self._environment()}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        path = self.socket_path
        pid = spawn([sys.executable, "-m", MODULE, "serve", "--socket", str(path), "--size", str(self.size),
                     "--scripts", str(self.scripts)],
                    log_file=self.log_file, pid_file=self.pid_file, cwd=self.dir, env=env)
        self.save_state(socket=str(path))
        if not wait_for(lambda: _accepts(path) or not pid_alive(pid), timeout=30, interval=0.05) or not pid_alive(pid):
            raise StackError(f"the stage pool did not start on {path}\n{log_tail(self.log_file)}")


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
