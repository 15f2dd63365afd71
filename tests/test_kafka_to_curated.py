"""Kafka exactly-once, end to end: a consumer killed after landing and before confirming, a rerun,
then the real standardize and curate Glue scripts — curated data holds every produced transaction once."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import date, timedelta

import duckdb
import pytest

from fluxo.lake import Lake
from fluxo_platform.lakefs import open_delta
from fluxo_platform.settings import REPO_ROOT

INGEST_DATE = "2026-03-15"
EVENT_DAY = date(2026, 1, 10)


def run_stage(script: str, env: dict) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "glue_scripts" / f"{script}.py"), "--JOB_NAME", script,
         "--lake_root", env["FLUXO_LAKE_ROOT"], "--ingest_date", INGEST_DATE],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_killed_consumer_rerun_leaves_no_duplicate_and_no_loss(stack_env, warehouse_url, tmp_path):
    from confluent_kafka.admin import AdminClient, NewTopic

    from fluxo_dev.generator import generate
    from fluxo_dev.streaming import produce
    from fluxo_extract.kafka_stream import SimulatedCrash, land_kafka

    generate(tmp_path, EVENT_DAY, days=1, rows_per_day=800, seed=5, sources=("kafka",))
    topic = f"transactions-e2e-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack_env["FLUXO_KAFKA_BOOTSTRAP"]})
    for future in admin.create_topics([NewTopic(topic, 3, 1)]).values():
        future.result(timeout=15)
    produced = produce(tmp_path, stack_env["FLUXO_KAFKA_BOOTSTRAP"], topic)

    def land(**kwargs) -> dict:
        return land_kafka(INGEST_DATE, topic=topic, idle_seconds=2.0, group_id=f"fluxo-{topic}", **kwargs)

    with pytest.raises(SimulatedCrash):
        land(simulate_crash="before_confirm")  # the batch is in the raw zone; nothing confirmed or committed
    rerun = land()
    assert rerun["messages"] == produced, "the rerun must read every message again"
    assert land()["messages"] == 0, "after a confirmed and committed run nothing is read twice"

    run_stage("standardize", stack_env)
    run_stage("curate", stack_env)

    expected = {
        row[0] for row in duckdb.connect().execute(
            f"SELECT DISTINCT transaction_id FROM read_parquet('{tmp_path}/labels/labels.parquet')"
            " WHERE source = 'kafka' AND expected = 'valid'"
        ).fetchall()
    }
    table = open_delta(Lake(stack_env["FLUXO_LAKE_ROOT"]).curated_transactions)
    curated = table.to_pyarrow_table(columns=["transaction_id", "source", "event_date"]).to_pylist()
    our_days = {str(EVENT_DAY - timedelta(days=1)), str(EVENT_DAY)}  # the generator plants late events a day back
    ours = [r["transaction_id"] for r in curated
            if r["transaction_id"] in expected or (r["source"] == "kafka" and str(r["event_date"]) in our_days)]
    assert len(ours) == len(set(ours)), "curated data holds a transaction twice"
    assert set(ours) == expected, "curated data lost or invented transactions"
