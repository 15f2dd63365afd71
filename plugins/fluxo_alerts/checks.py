"""Data checks that alert: stale curated data, and a day whose volume is far from the recent norm.

Both read the warehouse (what BI tools and the API see) and send their alert through the
webhook notifier; the thresholds are settings (FLUXO_FRESHNESS_MAX_AGE_HOURS,
FLUXO_VOLUME_TOLERANCE_RATIO, FLUXO_VOLUME_HISTORY_DAYS).
"""

from __future__ import annotations

import logging
import statistics
from datetime import date, datetime, time, timedelta, timezone

from fluxo_alerts.notifier import send_alert
from fluxo_platform.settings import get_settings
from fluxo_platform.warehouse import warehouse_connection

log = logging.getLogger(__name__)
# Fewer earlier days than this: no norm yet, only an empty day is reported.
MIN_HISTORY_DAYS = 3


class StaleDataError(RuntimeError):
    """The latest curated day is older than the freshness threshold."""


def latest_curated_day(conn) -> date | None:
    """The newest event date in the warehouse's daily metrics (one row per curated day)."""
    return conn.execute("SELECT max(event_date) FROM metrics.daily_transactions").fetchone()[0]


def check_freshness(now: datetime | None = None, context=None) -> dict:
    """Alert (and raise StaleDataError) when the latest curated day ended more than the threshold ago."""
    settings = get_settings()
    now = now or datetime.now(timezone.utc)
    with warehouse_connection() as conn:
        latest = latest_curated_day(conn)
    limit = timedelta(hours=settings.freshness_max_age_hours)
    result = {"latest_day": latest.isoformat() if latest else None, "max_age_hours": settings.freshness_max_age_hours}
    if latest is None:
        text = "no curated day in the warehouse yet (metrics.daily_transactions is empty)"
    else:
        age = now - datetime.combine(latest + timedelta(days=1), time(), tzinfo=timezone.utc)
        result["age_hours"] = round(age.total_seconds() / 3600, 1)
        if age <= limit:
            log.info("fresh: latest curated day %s ended %.1f h ago (limit %s h)", latest, result["age_hours"],
                     settings.freshness_max_age_hours)
            return {**result, "fresh": True}
        text = (f"the latest curated day is {latest}, which ended {result['age_hours']} h ago "
                f"(limit {settings.freshness_max_age_hours} h): transactions_etl has not curated newer data")
    send_alert("stale_data", "fluxo data is stale", text, severity="critical", context=context)
    raise StaleDataError(text)


def recent_volumes(conn, ingest_date: str, days: int) -> dict[date, int]:
    """Staged rows of the latest successful run of each of the `days` ingest dates before `ingest_date`."""
    rows = conn.execute(
        """
        SELECT DISTINCT ON (ingest_date) ingest_date, (counts->>'staged')::bigint
        FROM audit.pipeline_runs
        WHERE state = 'success' AND ingest_date < %s::date AND ingest_date >= %s::date - %s
        ORDER BY ingest_date, finished_at DESC
        """,
        (ingest_date, ingest_date, days),
    ).fetchall()
    return {day: staged for day, staged in rows if staged is not None}


def volume_finding(staged: int, history: dict[date, int], ratio: float) -> str | None:
    """Why `staged` is an odd volume against `history` (None: it is not)."""
    if staged == 0:
        return "no transaction was staged for the day (zero rows)"
    if len(history) < MIN_HISTORY_DAYS:
        return None
    norm = statistics.median(history.values())
    if norm and not norm / ratio <= staged <= norm * ratio:
        return (f"{staged} rows staged, the median of the {len(history)} earlier days is {norm:g} "
                f"(tolerance x{ratio:g})")
    return None


def check_volume(ingest_date: str, standardize_result: dict | None, context=None) -> dict:
    """Warn through the webhook when the day's staged rows are zero or far from the recent norm.

    A warning, not a failure: the data may be right (a holiday, a new partner), a person decides.
    """
    settings = get_settings()
    stats = (standardize_result or {}).get("stats") or {}
    staged, read = int(stats.get("staged", 0)), int(stats.get("read", 0))
    with warehouse_connection() as conn:
        history = recent_volumes(conn, ingest_date, settings.volume_history_days)
    finding = volume_finding(staged, history, settings.volume_tolerance_ratio)
    result = {"ingest_date": ingest_date, "read": read, "staged": staged, "history_days": len(history),
              "norm": statistics.median(history.values()) if history else None, "warning": finding}
    if finding:
        send_alert("volume", f"unusual volume for {ingest_date}", finding, severity="warning", context=context)
    else:
        log.info("volume of %s is within the norm: %s", ingest_date, result)
    return result
