"""Alerts of the fluxo DAGs: one webhook notifier, the freshness and volume checks."""

from fluxo_alerts.notifier import RunFailureNotifier, WebhookNotifier, send_alert

__all__ = ["RunFailureNotifier", "WebhookNotifier", "send_alert"]
