"""PostgreSQL from the machine's server binaries (or the `pgserver` wheel), TCP on 127.0.0.1 only."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
from pathlib import Path

from fluxo_dev.stack.process import (
    HOST,
    MAX_SOCKET_PATH,
    StackError,
    log_tail,
    pid_alive,
    port_is_open,
    read_pid,
    wait_for,
    write_private,
)
from fluxo_dev.stack.service import Service

ROLE = "fluxo"
SUPERUSER = "postgres"
WAREHOUSE_DB = "fluxo"
AIRFLOW_DB = "airflow"
SOURCE_DB = "fluxo_source"
DATABASES = (WAREHOUSE_DB, AIRFLOW_DB, SOURCE_DB)

# Unix socket paths are limited to 107 bytes (sun_path); the name adds ".s.PGSQL.NNNNN".
_MAX_SOCKET_DIR = MAX_SOCKET_PATH - len("/.s.PGSQL.65535")


def find_bin_dir() -> Path:
    """Newest Debian/Ubuntu server install, else initdb on PATH, else the `pgserver` wheel."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    if candidates:
        return max(candidates, key=version)
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    try:
        import pgserver  # noqa: F401  (PostgreSQL binaries shipped in a wheel)
    except ImportError:
        raise StackError(
            "no PostgreSQL server binaries found: install Debian's postgresql package "
            "(apt-get install postgresql) or the PyPI package pgserver, "
            "or point FLUXO_DATABASE_URL at an existing server"
        ) from None
    for module in ("pgserver._commands", "pgserver.postgres_server"):
        try:
            return Path(__import__(module, fromlist=["POSTGRES_BIN_PATH"]).POSTGRES_BIN_PATH)
        except (ImportError, AttributeError):
            continue
    raise StackError("the installed pgserver package does not expose POSTGRES_BIN_PATH")


def _server_user() -> pwd.struct_passwd | None:
    """The OS user that runs the server when we are root (postgres refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise StackError("running as root but there is no 'postgres' (or 'nobody') user to run PostgreSQL")


def _can_traverse(path: Path, user: pwd.struct_passwd) -> bool:
    st = path.stat()
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _quote_conf(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Postgres(Service):
    name = "postgres"
    label = "postgresql"
    executable = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, checkpoint, exit
    stop_timeout = 30.0

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    # The server writes its own pid file; ours is a copy for uniform tooling.
    def pid(self) -> int | None:
        pid = read_pid(self.data_dir / "postmaster.pid")
        return pid if pid_alive(pid, self.executable) else None

    def _run(self, args: list[str], user: pwd.struct_passwd | None) -> subprocess.CompletedProcess:
        command = ["runuser", "-u", user.pw_name, "--", *args] if user else args
        result = subprocess.run(command, cwd=self.dir, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise StackError(
                f"{Path(args[0]).name} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n"
                f"log: {self.log_file}\n{log_tail(self.log_file)}"
            )
        return result

    def _prepare_dirs(self, user: pwd.struct_passwd | None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if user is None:
            self.dir.chmod(0o700)
            return
        if not shutil.which("runuser"):
            raise StackError("running as root needs `runuser` (util-linux) to start PostgreSQL as postgres")
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.dir.chmod(0o700)
        # The server user must be able to walk down to its folder. Grant only the
        # traverse bit (o+x: no listing) on ancestors that lack it, e.g. a 0700 pytest tmp dir.
        for parent in self.dir.resolve().parents:
            if not _can_traverse(parent, user):
                parent.chmod(parent.stat().st_mode | stat.S_IXOTH)
                self.progress(f"granted traverse permission (o+x) on {parent} to the {user.pw_name} user")

    def _initdb(self, bin_dir: Path, user: pwd.struct_passwd | None) -> None:
        pwfile = self.dir / "superuser.pw"
        write_private(pwfile, self.credentials.get("postgres_superuser_password") + "\n")
        if user:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        try:
            self.progress(f"initialising a new PostgreSQL cluster in {self.data_dir}")
            self._run(
                [
                    str(bin_dir / "initdb"),
                    "-D", str(self.data_dir),
                    "-U", SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                user,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# fluxo: listener settings rewritten at every start\ninclude_if_exists = 'fluxo.conf'\n")

    def _write_listener_conf(self, port: int, user: pwd.struct_passwd | None) -> None:
        socket_dir = str(self.dir.resolve())
        # Too deep a folder for a unix socket: serve TCP only rather than fall back to /tmp or /var/run.
        sockets = socket_dir if len(socket_dir.encode()) <= _MAX_SOCKET_DIR else ""
        conf = self.data_dir / "fluxo.conf"
        write_private(
            conf,
            f"listen_addresses = {_quote_conf(HOST)}\n"
            f"port = {port}\n"
            f"unix_socket_directories = {_quote_conf(sockets)}\n",
            mode=0o600,
        )
        if user:
            os.chown(conf, user.pw_uid, user.pw_gid)

    def start(self, ports: dict[str, int]) -> None:
        bin_dir = find_bin_dir()
        user = _server_user()
        self._prepare_dirs(user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir, user)
        self._write_listener_conf(ports["port"], user)
        if not self.log_file.exists():
            self.log_file.touch(mode=0o640)
        if user:
            os.chown(self.log_file, user.pw_uid, user.pw_gid)
        # pg_ctl detaches the postmaster (own session) and clears a stale postmaster.pid itself.
        self._run(
            [str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60", "start"],
            user,
        )
        if not wait_for(lambda: port_is_open(ports["port"]), timeout=10):
            raise StackError(f"postgresql did not open {HOST}:{ports['port']}\n{log_tail(self.log_file)}")
        pid = self.pid()
        write_private(self.pid_file, f"{pid}\n", mode=0o644)
        self.save_state(port=ports["port"], bin_dir=str(bin_dir))

    def endpoint(self) -> str:
        port = self._running_port() or self.state().get("port")
        return f"{HOST}:{port}" if port else ""

    def _running_port(self) -> int | None:
        # postmaster.pid line 4 is the port the live server listens on.
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[3])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def port(self) -> int:
        return self._running_port() or int(self.state()["port"])

    def provision(self) -> None:
        import psycopg
        from psycopg import sql

        password = self.credentials.get("postgres_password")
        with psycopg.connect(
            host=HOST,
            port=self.port,
            user=SUPERUSER,
            password=self.credentials.get("postgres_superuser_password"),
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
            # Development only: CREATEROLE lets warehouse migrations create the read-only BI role,
            # CREATEDB lets tests replay migrations in a scratch database.
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} WITH LOGIN CREATEROLE CREATEDB PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(password)
                )
            )
            present = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for db in DATABASES:
                if db not in present:
                    conn.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(ROLE))
                    )

    def url(self, database: str = WAREHOUSE_DB) -> str:
        return f"postgresql://{ROLE}:{self.credentials.get('postgres_password')}@{HOST}:{self.port}/{database}"
