"""The webhook notifier against a local HTTP receiver, and the freshness and volume checks on the warehouse."""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime, time, timedelta, timezone
from types import SimpleNamespace

import psycopg
import pytest

from tests.alert_receiver import alert_receiver


def _dag():
    from airflow.sdk import DAG

    return DAG("transactions_etl", schedule=None)


@pytest.fixture()
def receiver():
    with alert_receiver() as found:
        yield found


def test_a_task_callback_posts_the_rendered_alert(receiver):
    from fluxo_alerts import WebhookNotifier

    notifier = WebhookNotifier(event="run_failed", title="{{ dag.dag_id }} failed", text="run {{ run_id }}",
                               url=receiver.url)
    notifier({"dag": _dag(), "run_id": "manual__1"})
    (body,) = receiver.received
    assert (body["event"], body["title"], body["text"]) == ("run_failed", "transactions_etl failed", "run manual__1")
    assert (body["dag_id"], body["run_id"], body["severity"], body["_path"]) == (
        "transactions_etl", "manual__1", "critical", "/hooks/fluxo")


def test_a_deadline_alert_runs_as_the_triggerer_calls_it(receiver, monkeypatch):
    """The triggerer does `await callback(**kwargs, context=...)` with the run in the REST API's form."""
    from airflow.sdk.definitions.callback import AsyncCallback

    from fluxo_alerts import WebhookNotifier

    monkeypatch.setenv("FLUXO_ALERT_WEBHOOK_URL", receiver.url)
    AsyncCallback(WebhookNotifier, kwargs={})  # Airflow accepts the notifier class as an awaitable callback
    context = {"dag_run": {"dag_id": "transactions_etl", "dag_run_id": "scheduled__2026-11-01"},
               "deadline": {"id": "x", "deadline_time": "2026-11-02T03:00:00+00:00"}}
    asyncio.run(_await(WebhookNotifier(event="deadline_missed", title="late",
                                       text="run {{ dag_run.dag_run_id }} past {{ deadline.deadline_time }}",
                                       context=context)))
    (body,) = receiver.received
    assert body["text"] == "run scheduled__2026-11-01 past 2026-11-02T03:00:00+00:00"
    assert body["run_id"] == "scheduled__2026-11-01"


async def _await(notifier):
    await notifier


def test_a_failed_run_alert_names_the_first_error(receiver):
    from fluxo_alerts import RunFailureNotifier

    audit = {"ingest_date": "2026-11-20", "error_task": "quality_gate",
             "error_message": "critical expectation failed: amount_reporting"}
    ti = SimpleNamespace(xcom_pull=lambda task_ids: audit if task_ids == "record_audit" else None)
    RunFailureNotifier(url=receiver.url)({"dag": _dag(), "ti": ti,
                                          "run_id": "manual__2", "reason": "task_failure"})
    (body,) = receiver.received
    assert body["title"] == "transactions_etl run failed"
    assert body["text"] == ("run manual__2 failed (task_failure) for ingest date 2026-11-20; first error in "
                            "quality_gate: critical expectation failed: amount_reporting")


def test_without_a_webhook_the_alert_is_logged(monkeypatch, caplog):
    from fluxo_alerts import send_alert

    monkeypatch.delenv("FLUXO_ALERT_WEBHOOK_URL", raising=False)
    with caplog.at_level(logging.WARNING):
        body = send_alert("volume", "odd", "zero rows", url="")
    assert body["text"] == "zero rows" and "not sent anywhere" in caplog.text


def test_volume_far_from_the_norm_or_zero_is_reported():
    from fluxo_alerts.checks import volume_finding

    history = {date(2026, 11, d): n for d, n in ((1, 1000), (2, 1100), (3, 900))}
    assert volume_finding(0, {}, 3.0) == "no transaction was staged for the day (zero rows)"
    assert volume_finding(50, dict(list(history.items())[:2]), 3.0) is None  # no norm yet from 2 days
    assert volume_finding(1200, history, 3.0) is None
    assert "median of the 3 earlier days is 1000" in volume_finding(200, history, 3.0)
    assert volume_finding(3500, history, 3.0) is not None


def test_check_volume_reads_the_recent_days_from_the_run_audit(stack_env, warehouse_url, receiver, monkeypatch):
    from fluxo_alerts.checks import check_volume

    monkeypatch.setenv("FLUXO_ALERT_WEBHOOK_URL", receiver.url)
    days = [date(1990, 1, d) for d in (1, 2, 3, 4)]
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        for day, staged in zip(days, (1000, 1200, 800, 5)):
            conn.execute("INSERT INTO audit.pipeline_runs (run_id, dag_id, ingest_date, state, counts)"
                         " VALUES (%s, 'volume_test', %s, %s, %s)",
                         (f"volume-{day}", day, "failed" if staged == 5 else "success", f'{{"staged": {staged}}}'))
    try:
        ok = check_volume("1990-01-05", {"stats": {"staged": 1100}})
        assert (ok["warning"], ok["norm"], ok["history_days"]) == (None, 1000, 3)  # the failed run does not count
        odd = check_volume("1990-01-05", {"stats": {"staged": 100}})
        assert "100 rows staged" in odd["warning"]
        assert [b["event"] for b in receiver.received] == ["volume"]
    finally:
        with psycopg.connect(warehouse_url, autocommit=True) as conn:
            conn.execute("DELETE FROM audit.pipeline_runs WHERE dag_id = 'volume_test'")


def test_freshness_alerts_when_the_latest_curated_day_is_too_old(stack_env, warehouse_url, receiver, monkeypatch):
    from fluxo_alerts.checks import StaleDataError, check_freshness, latest_curated_day
    from fluxo_platform.settings import get_settings

    monkeypatch.setenv("FLUXO_ALERT_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("FLUXO_FRESHNESS_MAX_AGE_HOURS", "36")
    get_settings.cache_clear()
    try:
        with psycopg.connect(warehouse_url) as conn:
            latest = latest_curated_day(conn)
        if latest is not None:
            day_end = datetime.combine(latest + timedelta(days=1), time(), tzinfo=timezone.utc)
            fresh = check_freshness(now=day_end + timedelta(hours=35))
            assert fresh["fresh"] and fresh["latest_day"] == latest.isoformat()
            assert receiver.received == []
        with pytest.raises(StaleDataError, match="limit 36" if latest else "no curated day"):
            check_freshness(now=datetime(2100, 1, 1, tzinfo=timezone.utc))
        (body,) = receiver.received
        assert body["event"] == "stale_data" and body["severity"] == "critical"
    finally:
        get_settings.cache_clear()
