"""One Airflow notifier for every fluxo alert: a JSON POST to the configured webhook.

    WebhookNotifier(event="deadline_missed", title="...", text="... {{ dag_run.run_id }} ...")

The URL is the setting FLUXO_ALERT_WEBHOOK_URL unless given; without one the alert is only
logged (a development machine has nowhere to send it). The body is

    {"event", "severity", "title", "text", "dag_id", "run_id", "sent_at"}

`text` is what chat webhooks (Slack, Teams, Google Chat) display. The notifier runs where
Airflow calls it: as a DAG's `on_failure_callback` (the DAG processor, sync `notify`), as a
deadline alert's `AsyncCallback` (the triggerer, `async_notify`) and from tasks (`send_alert`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import httpx
from airflow.sdk import BaseNotifier

from fluxo.tokenize import mask_pans
from fluxo_platform.settings import FluxoSettings

log = logging.getLogger(__name__)
TIMEOUT_S = 10.0


def _field(obj: Any, name: str) -> Any:
    """An attribute of a context object, or a key of its JSON form (the triggerer's context is plain dicts)."""
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def alert_body(event: str, severity: str, title: str, text: str, context: Mapping | None = None) -> dict:
    context = context or {}
    dag_run = context.get("dag_run")
    dag = context.get("dag")
    return {
        "event": event,
        "severity": severity,
        # an alert quotes errors and findings, and is read by people: no card number in it
        "title": mask_pans(title),
        "text": mask_pans(text),
        "dag_id": _field(dag_run, "dag_id") or _field(dag, "dag_id"),
        # a deadline alert's context holds the REST API's form of the run (`dag_run_id`)
        "run_id": context.get("run_id") or _field(dag_run, "run_id") or _field(dag_run, "dag_run_id"),
        "sent_at": datetime.now(timezone.utc).isoformat(),
    }


def _target(url: str | None) -> str:
    return url if url is not None else FluxoSettings().alert_webhook_url


def send_alert(event: str, title: str, text: str, severity: str = "warning", context: Mapping | None = None,
               url: str | None = None) -> dict:
    """POST one alert now (from a task); returns the body sent, or logged when no webhook is set."""
    body = alert_body(event, severity, title, text, context)
    target = _target(url)
    log.warning("ALERT %s [%s] %s: %s", event, severity, body["title"], body["text"])
    if not target:
        log.warning("no FLUXO_ALERT_WEBHOOK_URL set: the %s alert above was not sent anywhere", event)
        return body
    httpx.post(target, json=body, timeout=TIMEOUT_S).raise_for_status()
    return body


class WebhookNotifier(BaseNotifier):
    """POST a templated alert (`title`, `text` see the Airflow context) to the fluxo webhook."""

    template_fields = ("title", "text")

    def __init__(self, *, event: str, title: str, text: str = "", severity: str = "critical",
                 url: str | None = None, context: dict | None = None):
        super().__init__(context=context)
        self.event, self.title, self.text, self.severity, self.url = event, title, text, severity, url

    def notify(self, context) -> None:
        send_alert(self.event, self.title, self.text, self.severity, context, self.url)

    async def async_notify(self, context) -> None:
        body = alert_body(self.event, self.severity, self.title, self.text, context)
        target = _target(self.url)
        self.log.warning("ALERT %s [%s] %s: %s", self.event, self.severity, self.title, self.text)
        if not target:
            self.log.warning("no FLUXO_ALERT_WEBHOOK_URL set: the %s alert above was not sent anywhere", self.event)
            return
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            (await client.post(target, json=body)).raise_for_status()


class RunFailureNotifier(WebhookNotifier):
    """A failed run's alert: why Airflow failed it, and the first error the run audit found.

    The audit task's XCom (`audit_task`) names the task that raised first and its own message;
    a run stopped before the audit ran (run timeout) reports Airflow's reason only.
    """

    def __init__(self, *, audit_task: str = "record_audit", **kwargs):
        kwargs.setdefault("event", "run_failed")
        kwargs.setdefault("title", "{{ dag.dag_id }} run failed")
        super().__init__(**kwargs)
        self.audit_task = audit_task

    def notify(self, context) -> None:
        audit = None
        ti = context.get("ti")
        if ti is not None:
            try:
                audit = ti.xcom_pull(task_ids=self.audit_task)
            except Exception as exc:  # noqa: BLE001 - the alert goes out without the detail
                log.warning("could not read the run audit for the alert: %s", exc)
        send_alert(self.event, self.title, failure_text(context, audit), self.severity, context, self.url)


def failure_text(context: Mapping, audit: Mapping | None) -> str:
    run_id = context.get("run_id") or _field(context.get("dag_run"), "run_id")
    text = f"run {run_id} failed ({context.get('reason') or 'failed'})"
    if audit:
        text += f" for ingest date {audit.get('ingest_date')}"
        if audit.get("error_task"):
            text += f"; first error in {audit['error_task']}: {audit.get('error_message')}"
    return text
