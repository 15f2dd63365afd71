"""Sources that feed a local run: the partner-API simulator and a Kafka producer, as stack services.

`python -m fluxo_dev.stack up` starts both (unless AIRFLOW_CONN_FLUXO_PARTNER_API or
FLUXO_KAFKA_BOOTSTRAP names a real source), so a run triggered from the Airflow UI on a fresh
clone has records to extract: the simulator serves generated partner records for yesterday
(UTC); the producer streams freshly generated card events for yesterday into the
`transactions` topic, in bursts (BURST events, then BURST_PAUSE_S seconds of quiet), pass after
pass, each pass new transactions. The quiet lets `land_kafka`, which consumes until the topic
is idle, end its batch.

    python -m fluxo_dev.stack.feeds stream --bootstrap HOST:PORT [--burst 50] [--pause 10] [--rows 500]
    python -m fluxo_dev.stack.feeds partner-api --data DIR [--host H] [--port P]   (token: FLUXO_SIMULATOR_TOKEN)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from fluxo_dev.stack.process import HOST, StackError, log_tail, pid_alive, spawn, wait_for
from fluxo_dev.stack.service import Service

PARTNER_ROWS = 2000
STREAM_ROWS = 500
BURST = 50
BURST_PAUSE_S = 10.0


def feed_day() -> date:
    return datetime.now(timezone.utc).date() - timedelta(days=1)


class PartnerApi(Service):
    """The partner-API simulator (fluxo_dev.simulator) on generated records, bearer token from secrets.json."""

    name = "partner-api"
    label = "partner API (simulator)"
    executable = "fluxo_dev.simulator"

    @property
    def feed_dir(self) -> Path:
        return self.dir / "feed"

    def start(self, ports: dict[str, int]) -> None:
        import httpx

        args = [sys.executable, "-m", "fluxo_dev.simulator", "--data", str(ensure_partner_feed(self.feed_dir)),
                "--host", HOST, "--port", str(ports["port"])]
        env = {**os.environ, "FLUXO_SIMULATOR_TOKEN": self.credentials.get("partner_api_token")}
        pid = spawn(args, log_file=self.log_file, pid_file=self.pid_file, cwd=self.dir, env=env)
        self.save_state(**ports)
        health = f"http://{HOST}:{ports['port']}/_health"
        if not wait_for(lambda: not pid_alive(pid) or httpx.get(health, timeout=1).status_code == 200, timeout=60):
            raise StackError(f"the partner API simulator does not answer on {health}\n{log_tail(self.log_file)}")
        if not pid_alive(pid):
            raise StackError(f"the partner API simulator exited\n{log_tail(self.log_file)}")

    def connection(self) -> str:
        """Airflow's `fluxo_partner_api` connection to this simulator (JSON form, bearer token as password)."""
        return json.dumps({"conn_type": "http", "host": HOST, "port": self.port, "schema": "http",
                           "password": self.credentials.get("partner_api_token")})


def ensure_partner_feed(feed_dir: Path) -> Path:
    """Generate the partner's records once (they are served again at every start)."""
    from fluxo_dev.generator import generate

    if not any(Path(feed_dir).glob("api/dt=*/page-*.json")):
        day = feed_day()
        generate(Path(feed_dir), day, days=1, rows_per_day=PARTNER_ROWS, seed=day.toordinal(), sources=("api",))
    return Path(feed_dir)


class KafkaProducer(Service):
    """A producer streaming generated card events into the transactions topic (`stream` below)."""

    name = "kafka-producer"
    label = "kafka producer"
    executable = "fluxo_dev.stack.feeds"
    port_names = ()

    def __init__(self, *args, bootstrap=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.bootstrap = bootstrap  # a callable: the broker's endpoint when the producer starts

    def start(self, ports: dict[str, int]) -> None:
        bootstrap = self.bootstrap()
        # -c rather than -m: the stack package imports this module before runpy would run it
        args = [sys.executable, "-c", "import sys; from fluxo_dev.stack.feeds import main; sys.exit(main())",
                "stream", "--bootstrap", bootstrap,
                "--burst", str(BURST), "--pause", str(BURST_PAUSE_S), "--rows", str(STREAM_ROWS)]
        pid = spawn(args, log_file=self.log_file, pid_file=self.pid_file, cwd=self.dir, env=dict(os.environ))
        self.save_state(bootstrap=bootstrap)
        if wait_for(lambda: not pid_alive(pid), timeout=2):
            raise StackError(f"the kafka producer exited at once\n{log_tail(self.log_file)}")


def stream(bootstrap: str, burst: int, pause: float, rows: int, passes: int | None = None) -> int:
    """Generate `rows` new transactions of yesterday as Kafka events; send them `burst` at a time, `pause` s apart."""
    from fluxo_dev.generator import generate
    from fluxo_dev.streaming import produce
    from fluxo_dev.streaming.producer import event_files

    sent, done = 0, 0
    while passes is None or done < passes:
        day = feed_day()
        with tempfile.TemporaryDirectory(prefix="fluxo-stream-") as tmp:
            generate(Path(tmp), day, days=1, rows_per_day=rows, seed=day.toordinal() * 1000 + done,
                     sources=("kafka",))
            lines = [line for f in event_files(tmp) for line in f.read_text(encoding="utf-8").splitlines()]
        for start in range(0, len(lines), burst):
            sent += produce(lines[start:start + burst], bootstrap)
            time.sleep(pause)
        done += 1
        print(f"pass {done}: {len(lines)} events of {day} sent ({sent} in all)", flush=True)
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fluxo_dev.stack.feeds", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("stream", help="stream generated card events into the transactions topic")
    cmd.add_argument("--bootstrap", required=True)
    cmd.add_argument("--burst", type=int, default=BURST, help="events sent at once")
    cmd.add_argument("--pause", type=float, default=BURST_PAUSE_S, help="seconds of quiet between bursts")
    cmd.add_argument("--rows", type=int, default=STREAM_ROWS, help="transactions per pass")
    cmd.add_argument("--passes", type=int, default=None, help="stop after this many passes (default: never)")
    api = commands.add_parser("partner-api", help="serve generated partner records with the simulator")
    api.add_argument("--data", type=Path, required=True, help="feed folder (generated on first use)")
    api.add_argument("--host", default=HOST)
    api.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "stream":
        stream(args.bootstrap, args.burst, args.pause, args.rows, args.passes)
    else:
        from fluxo_dev.simulator.__main__ import main as serve

        serve(["--data", str(ensure_partner_feed(args.data)), "--host", args.host, "--port", str(args.port)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
