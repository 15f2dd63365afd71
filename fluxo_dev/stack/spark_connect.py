"""A warm Spark for local stage runs: a Spark Connect server, from the pyspark wheel.

Every Glue stage run locally would otherwise start its own JVM and session (10-20 s each
before any work). The server starts once with what a local stage session has (Delta, S3A
for the stack's S3 server, fluxo's log store: `fluxo.spark.connect_server_conf`) and stages
connect to it (`FLUXO_SPARK_REMOTE=sc://127.0.0.1:PORT`, in stack.env), each in a session of
its own. Setting FLUXO_SPARK_REMOTE to another server (a Spark cluster) replaces it.

    python -m fluxo_dev.stack.spark_connect PORT     # what the stack runs; stops on SIGTERM

The server is Spark's own Connect service started in a local session's driver (`serve`), not
Spark's server class: that class forces a class loader per session, which keeps a stage from
reusing the code the stages before it generated (see `connect_server_conf`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from fluxo.spark import connect_server_conf, local_session
from fluxo_dev.stack.process import (
    HOST, StackError, log_tail, pid_alive, port_is_open, read_pid, spawn, stop_pid, wait_for,
)
from fluxo_dev.stack.service import Service

SERVER_MODULE = "fluxo_dev.stack.spark_connect"
WARMUP_MODULE = "fluxo_dev.stack.spark_warmup"
# Driver memory of the shared server (every stage runs in it; the tests' stages too).
DRIVER_MEMORY = os.environ.get("FLUXO_SPARK_CONNECT_MEMORY", "4g")


class SparkConnect(Service):
    name = "spark"
    label = "spark (connect)"
    executable = SERVER_MODULE
    stop_signal = signal.SIGTERM
    stop_timeout = 30.0

    def __init__(self, *args, environment, **kwargs):
        super().__init__(*args, **kwargs)
        # the stack's environment (S3 endpoint and keys, JAVA_HOME, the log store jar), at start time
        self._environment = environment

    def url(self) -> str:
        return f"sc://{self.endpoint()}"

    def start(self, ports: dict[str, int]) -> None:
        env = {**os.environ, **self._environment(), "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": HOST}
        env.pop("FLUXO_SPARK_REMOTE", None)
        pid = spawn([sys.executable, "-m", SERVER_MODULE, str(ports["port"])], log_file=self.log_file,
                    pid_file=self.pid_file, cwd=self.dir, env=env)
        self.save_state(port=ports["port"])
        # the first start may fetch the JVM packages from Maven (bin/bootstrap warms the cache)
        opened = wait_for(lambda: port_is_open(ports["port"]) or not pid_alive(pid), timeout=300, interval=0.25)
        if not (opened and pid_alive(pid)):
            raise StackError(f"the Spark Connect server did not start on {HOST}:{ports['port']}\n{log_tail(self.log_file)}")
        if env.get("FLUXO_SPARK_WARMUP", "true").lower() != "false":
            # the JVM's first queries are slow (class loading, compilation): pay that now, in the background;
            # the log is this server's warm-up only (spawn appends)
            self.warmup_log.unlink(missing_ok=True)
            spawn([sys.executable, "-m", WARMUP_MODULE, self.url()], log_file=self.warmup_log,
                  pid_file=self.warmup_pid_file, cwd=self.dir, env=env)

    @property
    def warmup_log(self) -> Path:
        return self.dir / "warmup.log"

    @property
    def warmup_pid_file(self) -> Path:
        return self.dir / "warmup.pid"

    def stop(self) -> bool:
        """Stop a warm-up still running first (without its server its client would retry for minutes)."""
        stop_pid(read_pid(self.warmup_pid_file), executable=WARMUP_MODULE, timeout=5)
        self.warmup_pid_file.unlink(missing_ok=True)
        return super().stop()


def serve(port: int) -> None:
    """Run a Spark Connect server on 127.0.0.1:port in this process's Spark driver, until SIGTERM.

    The JVM is this process's child (pyspark's gateway); it is gone, its port closed, when this returns.
    """
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    spark = local_session("fluxo-spark-connect", s3=True,
                          extra={**connect_server_conf(port), "spark.driver.memory": DRIVER_MEMORY})
    spark.sparkContext.setLogLevel("WARN")
    jvm, gateway = spark._jvm, spark.sparkContext._gateway
    service = jvm.org.apache.spark.sql.connect.service.SparkConnectService
    # Connect derives every client's session from the default session: set it before the port opens
    jvm.org.apache.spark.sql.classic.SparkSession.setDefaultSession(spark._jsparkSession)
    service.start(spark._jsc.sc())
    print(f"Spark Connect server listening on {HOST}:{port}", flush=True)
    while not stopping.wait(1.0):
        pass
    service.stop(getattr(service, "stop$default$1")(), getattr(service, "stop$default$2")())
    spark.stop()
    gateway.proc.stdin.close()  # the gateway JVM exits when its stdin closes
    gateway.proc.wait(timeout=20)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
