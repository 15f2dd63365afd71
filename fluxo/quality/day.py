"""The day profile: what only a whole batch can show, for the `transactions_day` suite.

No rule about a single row can fail a day (standardize quarantines every row that breaks one,
`fluxo.contract.Contract.row_rules`). What the critical gate still guards is the batch:

* a source whose share of quarantined records is over a threshold (`quarantine_rate`);
* a required column gone null: the share of a source's records quarantined as
  `missing_required:<column>` for its worst column (`missing_rate`);
* a source whose volume is far from its recent norm: records read today over the median of
  the previous days' (`volume_ratio`, only once there are enough previous days);
* an empty day (the business suite's row count on the staged rows).

The profile has one row per source (read today, or seen in the recent days) and is built from
standardize's stats documents (`work/stats/ingest_date=D/standardize.json`): today's, and the
previous days' inside the window the suite sets. Nothing else is read, so the check is cheap.
Thresholds and the window are data in `expectations/transactions_day.json`; each row carries
a `detail` sentence that a failure message quotes, so the message says which source and why.
"""

from __future__ import annotations

import re
import statistics
from datetime import date, timedelta

PROFILE = "day_profile"
PROFILE_SCHEMA = (
    "source string, read long, staged long, quarantined long, quarantine_rate double, "
    "missing_rate double, missing_column string, recent_days int, recent_median_read double, "
    "volume_ratio double, detail string"
)
VOLUME_RULE = "volume_vs_recent_days"
DEFAULT_WINDOW_DAYS = 7
DEFAULT_MIN_DAYS = 3
_STATS_DAY = re.compile(r"ingest_date=(\d{4}-\d{2}-\d{2})/standardize\.json$")


def history_window(suites: list[dict]) -> tuple[int, int]:
    """(window_days, min_days) of the volume rule in the suites (defaults when absent)."""
    for suite in suites:
        for e in suite["expectations"]:
            if e["meta"]["rule"] == VOLUME_RULE:
                return int(e["meta"].get("window_days", DEFAULT_WINDOW_DAYS)), int(e["meta"].get("min_days", DEFAULT_MIN_DAYS))
    return DEFAULT_WINDOW_DAYS, DEFAULT_MIN_DAYS


def recent_stats_paths(paths: list[str], ingest_date: str, window_days: int) -> list[str]:
    """The standardize stats documents of the `window_days` days before `ingest_date`, oldest first."""
    day = date.fromisoformat(ingest_date)
    first = (day - timedelta(days=window_days)).isoformat()
    dated = [(m.group(1), p) for p in paths if (m := _STATS_DAY.search(p))]
    return [p for d, p in sorted(dated) if first <= d < ingest_date]


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def profile_rows(today: dict | None, history: list[dict], min_days: int = DEFAULT_MIN_DAYS) -> list[dict]:
    """One row per source from today's standardize stats and the previous days' (documents
    without `by_source`, written before it existed, are left out of the norm)."""
    by_source = (today or {}).get("by_source") or {}
    past = [h["by_source"] for h in history if isinstance(h.get("by_source"), dict)]
    usual = {s for days in past for s in days} if len(past) >= min_days else set()
    rows = []
    for source in sorted(set(by_source) | usual):
        t = by_source.get(source) or {}
        read, quarantined = t.get("read", 0), t.get("quarantined", 0)
        reasons = t.get("quarantine_by_reason") or {}
        missing = {r.split(":", 1)[1]: n for r, n in reasons.items() if r.startswith("missing_required:")}
        missing_column = max(missing, key=lambda c: (missing[c], c)) if missing else None
        reads = [days.get(source, {}).get("read", 0) for days in past]
        median = statistics.median(reads) if len(reads) >= min_days else None
        row = {
            "source": source, "read": read, "staged": t.get("staged", 0), "quarantined": quarantined,
            "quarantine_rate": _share(quarantined, read),
            "missing_rate": _share(missing.get(missing_column, 0), read),
            "missing_column": missing_column,
            "recent_days": len(reads), "recent_median_read": float(median) if median is not None else None,
            "volume_ratio": read / median if median else None,
        }
        row["detail"] = _detail(row, reasons)
        rows.append(row)
    return rows


def _detail(row: dict, reasons: dict[str, int]) -> str:
    text = f"{row['source']}: {row['quarantined']:,} of {row['read']:,} records quarantined"
    if row["quarantine_rate"] is not None:
        text += f" ({row['quarantine_rate']:.1%})"
    if reasons:
        top = max(reasons, key=lambda r: (reasons[r], r))
        text += f", mostly {top} ({reasons[top]:,})"
    if row["missing_column"]:
        text += f"; {row['missing_column']} missing in {row['missing_rate']:.1%} of records"
    if row["recent_median_read"] is not None:
        text += (f"; {row['read']:,} records read against a median of {row['recent_median_read']:,.0f}"
                 f" over the previous {row['recent_days']} days")
    return text
