"""The embedded local services: real PostgreSQL, tansu (Kafka protocol) and SeaweedFS (S3) processes."""

from __future__ import annotations

import json
import os
import re
import stat
import uuid
from pathlib import Path

import psutil
import pytest

from fluxo_dev.stack import Stack, load_env
from fluxo_dev.stack.credentials import Credentials
from fluxo_dev.stack.core import EXTERNAL_SETTING
from fluxo_dev.stack.kafka import TRANSACTIONS_PARTITIONS, TRANSACTIONS_TOPIC
from fluxo_dev.stack.process import StackError, port_is_open, wait_for
from fluxo_dev.stack.s3 import BUCKETS, s3_client
from fluxo_dev.stack.service import Service

EXTERNAL_KEYS = [*EXTERNAL_SETTING.values(), "FLUXO_S3_ACCESS_KEY", "FLUXO_S3_SECRET_KEY", "FLUXO_SOURCE_DATABASE_URL"]


def _clear_external(mp: pytest.MonkeyPatch) -> None:
    # A session-wide stack of the test run may export these; here every service must be our own.
    for key in EXTERNAL_KEYS:
        mp.delenv(key, raising=False)


def _all_ports(stack: Stack) -> list[int]:
    return [int(port) for service in stack.services.values() for port in service.state().values() if isinstance(port, int)]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        _clear_external(mp)
        # this module's own stack warms its Spark up (the session's stack does not); the other stacks
        # its tests start do not need to
        mp.setenv("FLUXO_SPARK_WARMUP", "false")
        home = tmp_path_factory.mktemp("stack")
        stack = Stack(home=home, progress=lambda message: None)
        try:
            with pytest.MonkeyPatch.context() as warm:
                warm.setenv("FLUXO_SPARK_WARMUP", "true")
                env = stack.up()
            mp.setenv("AIRFLOW_HOME", env["AIRFLOW_HOME"])  # keep Airflow imports out of ~/airflow
            yield stack, env
        finally:
            stack.down()


def test_postgres_serves_the_three_databases_to_the_fluxo_role(running):
    import psycopg

    _, env = running
    urls = {
        "fluxo": env["FLUXO_DATABASE_URL"],
        "fluxo_source": env["FLUXO_SOURCE_DATABASE_URL"],
        "airflow": env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg2://", "postgresql://"),
    }
    for database, url in urls.items():
        with psycopg.connect(url, connect_timeout=5) as conn:
            current = conn.execute("SELECT current_database(), current_user").fetchone()
            assert current == (database, "fluxo")
            # The role owns its databases, so migrations (and Airflow's) can create tables.
            conn.execute("CREATE TABLE stack_probe (id int)")
            conn.rollback()
    with psycopg.connect(urls["fluxo"]) as conn:
        assert conn.execute("SELECT current_setting('listen_addresses')").fetchone() == ("127.0.0.1",)


def test_kafka_round_trips_a_message_on_transactions(running):
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

    _, env = running
    bootstrap = env["FLUXO_KAFKA_BOOTSTRAP"]
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    assert len(topics[TRANSACTIONS_TOPIC].partitions) == TRANSACTIONS_PARTITIONS

    key = uuid.uuid4().hex.encode()
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(TRANSACTIONS_TOPIC, key=key, value=b'{"transaction_id": "t-1"}')
    assert producer.flush(10) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"stack-test-{key.decode()}",
            "auto.offset.reset": "earliest",
            # tansu completes the first join after half the session timeout.
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([TRANSACTIONS_TOPIC])
    received = None
    try:
        for _ in range(40):  # consume until our message arrives: tansu's end offsets are not reliable
            message = consumer.poll(0.5)
            if message is not None and not message.error() and message.key() == key:
                received = message
                break
    finally:
        consumer.close()
    assert received is not None and received.value() == b'{"transaction_id": "t-1"}'


def test_s3_stores_objects_and_refuses_a_wrong_secret(running):
    from botocore.exceptions import ClientError

    _, env = running
    client = s3_client(env["FLUXO_S3_ENDPOINT"], env["FLUXO_S3_ACCESS_KEY"], env["FLUXO_S3_SECRET_KEY"])
    assert set(BUCKETS) <= {b["Name"] for b in client.list_buckets()["Buckets"]}
    client.put_object(Bucket="fluxo-landing", Key="probe/hello.json", Body=b'{"ok": true}')
    assert client.get_object(Bucket="fluxo-landing", Key="probe/hello.json")["Body"].read() == b'{"ok": true}'

    forged = s3_client(env["FLUXO_S3_ENDPOINT"], env["FLUXO_S3_ACCESS_KEY"], "not-the-secret")
    with pytest.raises(ClientError) as refused:
        forged.get_object(Bucket="fluxo-landing", Key="probe/hello.json")
    assert refused.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied"}


def test_every_port_listens_on_loopback_127_0_0_1_only(running):
    stack, _ = running
    ports = _all_ports(stack)
    assert len(ports) == 13  # postgres 1, kafka 1, seaweedfs 10, spark connect 1
    for port in ports:
        assert port_is_open(port), port
        # Another loopback address reaches a 0.0.0.0 listener but not one bound to 127.0.0.1.
        assert not port_is_open(port, host="127.0.0.2"), port


def test_stack_env_and_secrets_are_private_and_airflow_reads_the_connections(running):
    from airflow.sdk import Connection

    stack, env = running
    for private in (stack.env_file, stack.home / "secrets.json"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert load_env(stack.home) == env
    assert env["FLUXO_API_CLIENT_ID"] == "fluxo-demo"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert os.path.isfile(os.path.join(env["JAVA_HOME"], "bin", "java"))

    warehouse = Connection.from_json(env["AIRFLOW_CONN_FLUXO_WAREHOUSE"], conn_id="fluxo_warehouse")
    assert (warehouse.conn_type, warehouse.login, warehouse.schema) == ("postgres", "fluxo", "fluxo")
    assert f"{warehouse.host}:{warehouse.port}" in env["FLUXO_DATABASE_URL"]
    s3 = Connection.from_json(env["AIRFLOW_CONN_FLUXO_S3"], conn_id="fluxo_s3")
    assert (s3.conn_type, s3.login, s3.password) == ("aws", env["FLUXO_S3_ACCESS_KEY"], env["FLUXO_S3_SECRET_KEY"])
    assert s3.extra_dejson["endpoint_url"] == env["FLUXO_S3_ENDPOINT"]
    kafka = Connection.from_json(env["AIRFLOW_CONN_FLUXO_KAFKA"], conn_id="fluxo_kafka")
    assert kafka.extra_dejson["bootstrap.servers"] == env["FLUXO_KAFKA_BOOTSTRAP"]


def test_the_spark_server_is_warmed_up_in_the_background_and_leaves_nothing(running):
    stack, _ = running
    log = stack.spark.warmup_log
    wait_for(lambda: "spark warm-up " in log.read_text(), timeout=240, interval=1)
    text = log.read_text() if log.exists() else "(no warmup.log)"
    assert "spark warm-up done in" in text, text[-3000:]
    folders = re.findall(r"working in (\S+)", text)
    assert len(folders) == 1 and Path(folders[0]).name.startswith("fluxo-spark-warmup-"), text[-3000:]
    assert not Path(folders[0]).exists()


def test_every_session_on_the_spark_server_runs_its_tasks_in_one_class_loader(running):
    # Spark caches generated classes per class loader: with a loader per session (Spark's own Connect
    # server isolates sessions) each stage compiled again all the code the stages before it had compiled.
    from pyspark.sql import SparkSession

    _, env = running
    loader = "SELECT reflect('org.apache.spark.util.Utils', 'getContextOrSparkClassLoader') AS loader FROM range(1)"
    sessions = [SparkSession.builder.remote(env["FLUXO_SPARK_REMOTE"]).create() for _ in range(2)]
    try:
        assert sessions[0].session_id != sessions[1].session_id
        loaders = {session.sql(loader).first()["loader"] for session in sessions}
        assert len(loaders) == 1, loaders
    finally:
        for session in sessions:
            session.stop()


def test_local_stage_runs_start_in_the_stacks_warm_interpreters(running, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
    from fluxo_platform.stage_pool import start_run

    _, env = running
    script = tmp_path / "hello.py"
    script.write_text("import os, sys\nprint('hello from', os.environ['WHO'], 'preloaded' if 'pyspark.sql.connect.session' in sys.modules else 'cold')\n")
    run = start_run(env["FLUXO_STAGE_POOL"], [str(script)], {"WHO": "a stage", "PATH": os.environ["PATH"]}, str(tmp_path))
    assert run is not None
    assert run.stdout.read() == "hello from a stage preloaded\n" and run.wait() == 0


def test_second_up_reuses_the_running_services(running):
    stack, env = running
    before = stack.status()
    again = Stack(home=stack.home, progress=lambda message: None)
    assert again.up() == env
    assert again.status() == before
    assert {before[name]["state"] for name in stack.services} == {"running"}
    # the feeds and Airflow are only started when asked for
    assert {before[name]["state"] for name in (*stack.feeds, *stack.airflow)} == {"stopped"}


def test_external_database_url_means_no_postgres_is_started(running, tmp_path, monkeypatch):
    import psycopg

    _, env = running
    _clear_external(monkeypatch)
    monkeypatch.setenv("FLUXO_DATABASE_URL", env["FLUXO_DATABASE_URL"])
    stack = Stack(home=tmp_path, progress=lambda message: None)
    try:
        own = stack.up()
        assert stack.status()["postgres"] == {"state": "external", "endpoint": env["FLUXO_DATABASE_URL"], "pid": None}
        assert not (tmp_path / "services" / "postgres").exists()
        assert own["FLUXO_DATABASE_URL"] == env["FLUXO_DATABASE_URL"]
        assert own["FLUXO_SOURCE_DATABASE_URL"] == env["FLUXO_SOURCE_DATABASE_URL"]
        assert own["FLUXO_KAFKA_BOOTSTRAP"] != env["FLUXO_KAFKA_BOOTSTRAP"]  # its own broker
        with psycopg.connect(own["FLUXO_DATABASE_URL"], connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        stack.down()


def test_down_stops_everything_and_a_stale_pid_file_is_not_trusted(tmp_path, monkeypatch):
    _clear_external(monkeypatch)
    stack = Stack(home=tmp_path, progress=lambda message: None)
    try:
        first = stack.up(feeds=True)
        ports = _all_ports(stack) + [stack.partner_api.port]
        pids = [info["pid"] for info in stack.status().values() if info["pid"]]
        # postgres, kafka, s3, spark connect, the stage pool, the partner API simulator, the producer
        assert len(pids) == 7
        pids += [child.pid for child in psutil.Process(stack.stage_pool.pid()).children()]  # its warm interpreters
        stack.down()
        assert {info["state"] for info in stack.status().values()} == {"stopped"}
        assert not any(port_is_open(port) for port in ports)
        assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                       for pid in pids)
        assert (tmp_path / "services" / "postgres" / "data" / "PG_VERSION").exists()  # data kept

        # A pid file naming a live process that is not the broker (pid reuse) counts as stopped.
        stack.kafka.pid_file.write_text(f"{os.getpid()}\n")
        assert stack.status()["kafka"]["state"] == "stopped"
        second = stack.up()
        assert second["FLUXO_DATABASE_URL"] == first["FLUXO_DATABASE_URL"]  # same password and port
        assert os.getpid() not in [info["pid"] for info in stack.status().values()]
        assert set(pids).isdisjoint(info["pid"] for info in stack.status().values())
    finally:
        stack.down(purge=True)
    assert not (tmp_path / "services").exists()
    assert json.loads((tmp_path / "secrets.json").read_text())["postgres_password"] in first["FLUXO_DATABASE_URL"]


def test_cli_env_evaluates_in_a_shell_to_the_same_values(running):
    import subprocess
    import sys

    stack, env = running
    cli = f"{sys.executable} -m fluxo_dev.stack --home {stack.home}"
    script = f'eval "$({cli} env)" && printf "%s\\n%s\\n" "$AIRFLOW_CONN_FLUXO_S3" "$FLUXO_DATABASE_URL" && {cli} status'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=True)
    lines = result.stdout.splitlines()
    assert lines[:2] == [env["AIRFLOW_CONN_FLUXO_S3"], env["FLUXO_DATABASE_URL"]]
    table = {line.split()[0]: line.split() for line in lines[2:]}
    assert table["postgres"][1] == table["kafka"][1] == table["s3"][1] == "running"
    assert table["kafka"][2] == env["FLUXO_KAFKA_BOOTSTRAP"]


def test_cli_env_without_a_stack_says_to_run_up_first(tmp_path):
    from fluxo_dev.stack.__main__ import main

    assert load_env(tmp_path) == {}
    assert main(["--home", str(tmp_path), "env"]) == 1


def test_feeds_give_a_hand_triggered_run_data_in_every_source(running):
    import httpx
    from airflow.sdk import Connection
    from confluent_kafka import Consumer

    import psycopg

    from fluxo_tasks.pipeline import connection_ids

    stack, _ = running
    env = stack.up(feeds=True)
    # every connection transactions_etl uses is written, the partner API's included
    assert {f"AIRFLOW_CONN_{conn_id.upper()}" for conn_id in connection_ids()} <= set(env)
    api = Connection.from_json(env["AIRFLOW_CONN_FLUXO_PARTNER_API"], conn_id="fluxo_partner_api")
    base = f"http://{api.host}:{api.port}"
    assert not port_is_open(api.port, host="127.0.0.2")
    assert httpx.get(f"{base}/transactions", params={"limit": 5}).status_code == 401
    page = httpx.get(f"{base}/transactions", params={"limit": 5}, headers={"Authorization": f"Bearer {api.password}"})
    assert page.status_code == 200 and len(page.json()["data"]) == 5
    with psycopg.connect(env["FLUXO_SOURCE_DATABASE_URL"], connect_timeout=5) as conn:  # the OLTP schema
        assert conn.execute("SELECT to_regclass('payments.card_transaction')").fetchone()[0] is not None
    consumer = Consumer({"bootstrap.servers": env["FLUXO_KAFKA_BOOTSTRAP"], "group.id": f"feeds-{os.getpid()}",
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    consumer.subscribe([TRANSACTIONS_TOPIC])
    streamed = None
    try:
        for _ in range(80):  # the producer sends a burst every few seconds
            message = consumer.poll(0.5)
            if message is not None and not message.error() and b'"payload"' in message.value():
                streamed = message
                break
    finally:
        consumer.close()
    assert streamed is not None, "the producer streams card events"
    assert stack.status()["kafka-producer"]["state"] == "running"


def test_a_dag_processor_that_dies_while_parsing_stops_the_start_naming_its_log(running, tmp_path, monkeypatch):
    """Past the first seconds' "exited at once" check, a dag-processor that dies before the DAGs
    are parsed is an error with its log's tail, not a start that carries on without it."""
    from fluxo_dev.stack import airflow
    from fluxo_dev.stack.process import StackError

    stack, env = running
    fake = tmp_path / "airflow"
    fake.write_text("#!/bin/sh\necho 'Broken DAG: an import error' >&2\nsleep 4\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(airflow, "AIRFLOW_BIN", fake)
    processor = airflow.DagProcessor(tmp_path, stack.credentials, lambda message: None,
                                     environment=lambda: {**os.environ, **env})
    with pytest.raises(StackError, match="exited while parsing the DAGs") as raised:
        processor.ensure_running()
    assert "Broken DAG: an import error" in str(raised.value)


class _PortTakenOnce(Service):
    """A server whose first port is taken just before it binds it; or that fails for another reason."""

    name = label = "port-taken-once"

    def __init__(self, *args, failure: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.failure, self.tries = failure, []

    def start(self, ports):
        self.tries.append(ports["port"])
        if len(self.tries) == 1:
            raise StackError(self.failure)
        self.save_state(**ports)


def test_a_server_whose_port_is_taken_as_it_starts_starts_on_other_ports(tmp_path):
    taken = "weed did not open the S3 port\nPort allocation failed: port 48405 for Volume is not available"
    server = _PortTakenOnce(tmp_path, Credentials(tmp_path), lambda message: None, failure=taken)
    server.ensure_running()
    assert len(server.tries) == 2 and server.state() == {"port": server.tries[1]}

    broken = _PortTakenOnce(tmp_path / "b", Credentials(tmp_path / "b"), lambda message: None, failure="no binary")
    with pytest.raises(StackError, match="no binary"):
        broken.ensure_running()
    assert len(broken.tries) == 1  # any other failure is not retried
