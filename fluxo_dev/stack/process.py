"""Process plumbing shared by the embedded services: free ports, pid files, detached start, graceful stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HOST = "127.0.0.1"

# Popen objects of the servers this interpreter started: keeping them lets us reap
# exited children (no zombies that look alive to kill(pid, 0)) and avoids
# "subprocess still running" warnings when the objects would be collected.
_children: dict[int, subprocess.Popen] = {}


class StackError(RuntimeError):
    """A local service could not be found, started or reached."""


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too, so a port in TIME_WAIT is still usable by them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


# The longest path a Unix socket may have (sun_path is 108 bytes with its terminating NUL).
MAX_SOCKET_PATH = 107


def free_ports(count: int, preferred: Sequence[int] = ()) -> list[int]:
    """`count` distinct free ports on 127.0.0.1, keeping the preferred ones that are still free.

    Reusing the previous ports keeps `stack.env` stable across restarts.
    """
    chosen = [p for p in preferred[:count] if p and port_is_free(p)]
    if len(chosen) == count and len(set(chosen)) == count:
        return chosen
    # Hold every probe socket open until all are chosen so the kernel hands out distinct ports.
    sockets = []
    try:
        while len(sockets) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_open(port: int, host: str = HOST, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int | None, executable: str | None = None) -> bool:
    """True when `pid` runs and (if given) its command line mentions `executable`.

    The name check guards against a stale pid file whose pid was reused by
    another program.
    """
    if not pid:
        return False
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user (the postgres server user)
    proc = Path("/proc") / str(pid)
    if proc.exists():
        with contextlib.suppress(OSError):
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        if executable:
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                return True
            return executable in cmdline
    return True


def spawn(args: Sequence[str], *, log_file: Path, pid_file: Path, cwd: Path, env: dict | None = None) -> int:
    """Start a server detached from this terminal (own session), output appended to `log_file`."""
    with open(log_file, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            list(args),
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    write_private(pid_file, f"{proc.pid}\n", mode=0o644)
    return proc.pid


def stop_pid(pid: int, *, sig: int = signal.SIGTERM, timeout: float = 15.0, executable: str | None = None) -> bool:
    """Ask a server to stop with `sig`, wait, then SIGKILL. True when it was running."""
    if not pid_alive(pid, executable):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if not wait_for(lambda: not pid_alive(pid), timeout=timeout, interval=0.05):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), timeout=5, interval=0.05)
    child = _children.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1)
    return True


def wait_for(check: Callable[[], object], *, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if check():
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def log_tail(log_file: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write atomically with `mode` set before any content lands (secrets never world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
