"""Warm interpreters for local Glue stage runs: a stage starts with its imports already done.

A local stage run (`FluxoGlueJobOperator`, FLUXO_GLUE_MODE=local) in a new Python process first
imports pyspark's Connect client, fluxo and, for the quality gate and the fraud stage, Great
Expectations: 0.5-3 s before its first Spark call, a good part of a small day's stage. The local
stack (`fluxo_dev.stack`) runs this pool. It keeps `size` idle interpreters of each kind (`KINDS`)
that have imported what the scripts in `glue_scripts/` import, and hands one to each run: the
run brings its command line, environment, working directory and output pipes, and the
interpreter runs the script as `python script.py` would, in a session of its own (the operator
stops it by its process group), then exits. The pool starts a fresh interpreter in its place, so
nothing of one run is left for the next; and it never hands out one that may hold code older than
the project's files (an edit after the pool started).

The operator asks the pool named by FLUXO_STAGE_POOL (a Unix socket; stack.env sets it) and
starts the script as a new process when there is no pool or no interpreter free.

    python -m fluxo_platform.stage_pool serve --socket PATH --scripts DIR [--size 1]
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import gc
import importlib
import json
import os
import queue
import runpy
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO

# The pool's socket, in the environment of every process the local stack runs Airflow in (stack.env);
# not a FluxoSettings field: only the local stack has a pool.
POOL_SETTING = "FLUXO_STAGE_POOL"
# Kinds of interpreter: for the scripts that validate with Great Expectations, and for the others.
GX, SPARK = "gx", "spark"
KINDS = (SPARK, GX)
# Imported besides the scripts' own imports: what a stage loads on its way (the Connect client;
# Great Expectations, which the gate and the fraud stage import on a thread).
PRELOAD = {
    SPARK: ("pyspark.sql.connect.session", "pyspark.sql.connect.functions", "pyspark.sql.connect.dataframe"),
    GX: ("great_expectations", "great_expectations.checkpoint.actions", "great_expectations.data_context.types.base"),
}
# How long a run waits for an interpreter that is still importing before it starts a process itself.
READY_WAIT_SECONDS = 20.0
_HEADER = struct.Struct("!I")
_CLOCK_MARGIN_NS = 50_000_000


# --- the wire: a length-prefixed JSON message, file descriptors alongside ---------------------------

def _send(sock: socket.socket, message: dict, fds: list[int] = ()) -> None:
    data = json.dumps(message).encode()
    socket.send_fds(sock, [_HEADER.pack(len(data)) + data], list(fds))


def _receive(sock: socket.socket, max_fds: int = 0) -> tuple[dict | None, list[int]]:
    """The next message and the descriptors that came with it; (None, ...) when the peer has gone.
    Reads exactly one message: the next one (a run's exit after its pid) stays in the socket."""
    if max_fds:
        head, fds, _, _ = socket.recv_fds(sock, _HEADER.size, max_fds)
    else:
        head, fds = sock.recv(_HEADER.size), []
    head = _exactly(sock, _HEADER.size, head) if head else None
    body = _exactly(sock, _HEADER.unpack(head)[0]) if head else None
    return (json.loads(body) if body is not None else None), fds


def _exactly(sock: socket.socket, size: int, data: bytes = b"") -> bytes | None:
    while len(data) < size:
        more = sock.recv(size - len(data))
        if not more:
            return None
        data += more
    return data


# --- the client: what the operator calls ----------------------------------------------------------

class PooledRun:
    """A stage running in a pooled interpreter, read like `subprocess.Popen(..., text=True)`:
    `pid` (also its process group), `stdout`, `stderr`, `wait()`."""

    def __init__(self, conn: socket.socket, pid: int, stdout: IO[str], stderr: IO[str]):
        self._conn, self.pid, self.stdout, self.stderr = conn, pid, stdout, stderr
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            with self._conn:
                message, _ = _receive(self._conn)
            # without its exit status (the pool stopped mid-run) the run counts as failed
            self.returncode = int(message["exit"]) if message and "exit" in message else 1
        return self.returncode


def start_run(socket_path: str, argv: list[str], env: dict[str, str], cwd: str) -> PooledRun | None:
    """Run `argv` (script path first) in a warm interpreter of the pool at `socket_path`; None when
    the pool is not there or has no interpreter free (the caller starts a process instead)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    reply = None
    try:
        conn.settimeout(5)
        conn.connect(socket_path)
        _send(conn, {"argv": argv, "env": env, "cwd": cwd}, [out_w, err_w])
        conn.settimeout(READY_WAIT_SECONDS + 5)
        reply, _ = _receive(conn)
    except OSError:
        pass
    finally:
        os.close(out_w)  # the run holds its own copies: end of output is the end of the run
        os.close(err_w)
    if not reply or "pid" not in reply:
        conn.close()
        os.close(out_r)
        os.close(err_r)
        return None
    conn.settimeout(None)
    text = {"encoding": "utf-8", "errors": "replace", "buffering": 1}
    return PooledRun(conn, int(reply["pid"]), open(out_r, **text), open(err_r, **text))


# --- the pool -------------------------------------------------------------------------------------

class _Worker:
    def __init__(self, kind: str, proc: subprocess.Popen, control: socket.socket):
        self.kind, self.proc, self.control = kind, proc, control
        self.started_ns = time.time_ns()
        self.sources: list[str] = []  # the project's own modules it imported

    def stale(self) -> bool:
        """Whether a module it imported from the project was written since it started importing (an
        edit after `make up`): it may hold the code as it was. File times come from a coarser clock,
        hence the margin."""
        since = self.started_ns - _CLOCK_MARGIN_NS
        for path in self.sources:
            try:
                if os.stat(path).st_mtime_ns >= since:
                    return True
            except OSError:
                return True
        return False


class Pool:
    """`size` idle interpreters of each kind: one for the scripts that validate with Great
    Expectations (its import is 2 s of CPU, spent only where a script needs it), one for the rest."""

    def __init__(self, size: int, scripts: str):
        self.size, self.scripts = size, scripts
        self.kind_of = {name: kind for kind, names in script_kinds(scripts).items() for name in names}
        self.idle: dict[str, queue.Queue[_Worker]] = {kind: queue.Queue() for kind in KINDS}
        self.starting = dict.fromkeys(KINDS, 0)
        self.failures = dict.fromkeys(KINDS, 0)
        self.workers: set[_Worker] = set()
        self.lock = threading.Lock()

    def fill(self) -> None:
        """`size` interpreters of each kind some script runs in."""
        for kind in set(self.kind_of.values()):
            for _ in range(self.size):
                self.spawn(kind)

    def spawn(self, kind: str) -> None:
        ours, theirs = socket.socketpair()
        proc = subprocess.Popen(
            [sys.executable, "-m", "fluxo_platform.stage_pool", "worker", "--control", str(theirs.fileno()),
             "--scripts", self.scripts, "--kind", kind],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
            # a run's output goes through these streams as it is written, as a stage process's did
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"},
        )
        theirs.close()
        worker = _Worker(kind, proc, ours)
        with self.lock:
            self.starting[kind] += 1
            self.workers.add(worker)
        threading.Thread(target=self._await_ready, args=(worker,), daemon=True).start()

    def _await_ready(self, worker: _Worker) -> None:
        try:
            message, _ = _receive(worker.control)
        except (OSError, ValueError):
            message = None
        ready = bool(message and message.get("ready"))
        if ready:
            worker.sources = message.get("sources", [])
        kind = worker.kind
        with self.lock:
            self.starting[kind] -= 1
            self.failures[kind] = 0 if ready else self.failures[kind] + 1
            failures = self.failures[kind]
        if ready:
            self.idle[kind].put(worker)
            return
        print(f"stage pool: a {kind} interpreter failed to start (exit {worker.proc.wait()})", flush=True)
        self._forget(worker)
        if failures < 3:  # a broken environment does not spin: runs fall back to their own processes
            self.spawn(kind)

    def _forget(self, worker: _Worker) -> None:
        with self.lock:
            self.workers.discard(worker)
        worker.control.close()

    def take(self, script: str) -> _Worker | None:
        """An idle interpreter for `script`, waiting for one still importing; None when there is none."""
        kind = self.kind_of.get(Path(script).name, SPARK)
        try:
            worker = self.idle[kind].get_nowait()
        except queue.Empty:
            with self.lock:
                starting = self.starting[kind]
            if not starting:
                return None
            try:
                worker = self.idle[kind].get(timeout=READY_WAIT_SECONDS)
            except queue.Empty:
                return None
        if worker.stale():
            # it would run the code as it was when it started: this run starts a process of its own,
            # and a fresh interpreter imports the code as it is now
            print(f"stage pool: the project's code changed since a {kind} interpreter started: replacing it",
                  flush=True)
            worker.proc.kill()
            worker.proc.wait()
            self._forget(worker)
            self.spawn(kind)
            return None
        return worker

    def handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # a caller gone mid-handshake has nothing to be told
            self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        job, fds = _receive(conn, max_fds=2)
        try:
            if job is None:  # a probe (is the pool up?) or a caller gone
                return
            worker = self.take(job["argv"][0]) if len(fds) == 2 else None
            if worker is not None:
                self.spawn(worker.kind)  # its replacement imports while this run works
                try:
                    _send(worker.control, job, fds)
                except OSError:  # it died idle: the caller starts its own process
                    worker.proc.kill()
                    worker.proc.wait()
                    self._forget(worker)
                    worker = None
            if worker is None:
                _send(conn, {"busy": True})
                return
        finally:
            for fd in fds:
                os.close(fd)
        started = time.monotonic()
        try:
            _send(conn, {"pid": worker.proc.pid})
            threading.Thread(target=self._stop_if_abandoned, args=(conn, worker), daemon=True).start()
        except OSError:  # nobody is there to wait for this run
            self._stop_run(worker)
        code = worker.proc.wait()
        self._forget(worker)
        print(f"stage pool: {Path(job['argv'][0]).name} (pid {worker.proc.pid}) exited {code} "
              f"after {time.monotonic() - started:.1f} s", flush=True)
        _send(conn, {"exit": code})

    @staticmethod
    def _stop_if_abandoned(conn: socket.socket, worker: _Worker) -> None:
        """The caller went away before its run ended (its task process died): stop the run."""
        with contextlib.suppress(OSError):
            while conn.recv(1024):
                pass
        Pool._stop_run(worker)

    @staticmethod
    def _stop_run(worker: _Worker) -> None:
        """SIGTERM to the run's process group: the stage fails the way a killed task's does."""
        if worker.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker.proc.pid, signal.SIGTERM)

    def stop(self) -> None:
        with self.lock:
            workers = list(self.workers)
        for worker in workers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(worker.proc.pid) == worker.proc.pid:
                    os.killpg(worker.proc.pid, signal.SIGTERM)  # a run: it fails the way a killed task does
                else:
                    worker.proc.kill()  # idle


def serve(socket_path: str, size: int, scripts: str) -> None:
    pool = Pool(size, scripts)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket runs code as this user: only this user may connect
    try:
        listener.bind(socket_path)
    finally:
        os.umask(old_umask)
    listener.listen(16)

    def shut_down(signum, frame):
        pool.stop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)
        os._exit(0)

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    pool.fill()
    print(f"stage pool: {size} interpreter(s) of each kind for {scripts} ({pool.kind_of}), listening on {socket_path}",
          flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=pool.handle, args=(conn,), daemon=True).start()


# --- a worker: one interpreter, one run -----------------------------------------------------------

def script_imports(scripts: str) -> dict[str, set[str]]:
    """The absolute module imports at the top of each script in `scripts`, by script name."""
    imports: dict[str, set[str]] = {}
    for script in sorted(Path(scripts).glob("*.py")):
        modules = imports.setdefault(script.name, set())
        for node in ast.parse(script.read_text(), str(script)).body:
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module)
    return imports


def kind_of(modules: set[str]) -> str:
    """The kind of interpreter a script importing `modules` runs in."""
    gx = any(m == "fluxo.quality" or m.startswith(("fluxo.quality.", "great_expectations")) for m in modules)
    return GX if gx else SPARK


def script_kinds(scripts: str) -> dict[str, list[str]]:
    """The scripts of `scripts` by the kind of interpreter they run in."""
    kinds: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for name, modules in script_imports(scripts).items():
        kinds[kind_of(modules)].append(name)
    return kinds


def preload(scripts: str, kind: str) -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    sys.path[0] = scripts  # as for `python script.py`: the scripts' folder first (not this process's cwd)
    modules = set(PRELOAD[SPARK]) | set(PRELOAD[kind])
    for imported in script_imports(scripts).values():
        if kind_of(imported) == kind:
            modules |= imported
    for module in sorted(modules):
        with contextlib.suppress(Exception):  # a run imports it again and reports what fails
            importlib.import_module(module)
    # the imported modules' objects stay for the run: the collector need not walk them again and again
    gc.collect()
    gc.freeze()


def project_sources() -> list[str]:
    """The imported modules that are the project's own code, not the environment's packages: the pool
    checks them before handing this interpreter a run."""
    installed = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    return sorted({path for module in list(sys.modules.values())
                   if (path := getattr(module, "__file__", None)) and path.endswith(".py")
                   and not path.startswith(installed)})


def work(control_fd: int, scripts: str, kind: str) -> None:
    control = socket.socket(fileno=control_fd)
    preload(scripts, kind)
    _send(control, {"ready": True, "sources": project_sources()})
    job, fds = _receive(control, max_fds=2)
    if job is None:  # the pool has gone
        os._exit(0)
    control.close()
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((devnull, 0), (fds[0], 1), (fds[1], 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    script = os.path.abspath(job["argv"][0])
    # as `python script.py`: its folder first on the path, its command line in sys.argv and sys.orig_argv
    sys.path[0] = os.path.dirname(script)
    sys.argv = [script, *job["argv"][1:]]
    sys.orig_argv = [sys.executable, *sys.argv]
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - reported like an uncaught exception
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fluxo_platform.stage_pool")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="keep warm interpreters and run stages in them")
    serve_cmd.add_argument("--socket", required=True)
    serve_cmd.add_argument("--scripts", required=True, help="the Glue scripts' folder (their imports are preloaded)")
    serve_cmd.add_argument("--size", type=int, default=1, help="idle interpreters of each kind")
    worker_cmd = sub.add_parser("worker")
    worker_cmd.add_argument("--control", type=int, required=True)
    worker_cmd.add_argument("--scripts", required=True)
    worker_cmd.add_argument("--kind", choices=KINDS, required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.socket, args.size, args.scripts)
    else:
        work(args.control, args.scripts, args.kind)


if __name__ == "__main__":
    main()
