"""Land the partner REST API's transactions into the raw zone, each version exactly once.

    extract_partner_api(ingest_date, conn_id="fluxo_partner_api", conn=None, **tuning) -> counts

The Airflow connection (conn type http) says where and who: base URL in host/schema/port,
a bearer token in the password (login left empty), or an API key as a header in the extra
(`{"X-API-Key": "..."}`, HttpHook sends extra keys as headers); `timeout` in the extra is
the per-request timeout in seconds (default 30).

What a run does:

* Pages through `GET /transactions?updated_since=W&limit=N&cursor=C` following
  `next_cursor` (keyset pagination by (updated_at, transaction_id): a record updated
  mid-scan moves behind the cursor and is served again, as its new version).
* `W` is the watermark (newest updated_at landed) minus an overlap window, so writes that
  arrive late with an updated_at slightly in the past are still read. The watermark keeps
  the versions (transaction_id, updated_at) landed inside the window (`seen`), so the
  records the overlap reads again are skipped (`skipped_seen`) instead of landing twice.
  A version is its (transaction_id, updated_at): a record updated later lands again.
* Every request has a timeout. 5xx answers and network errors (refused, reset, timed out,
  cut transfers) are retried with exponential backoff and full jitter; a 429 waits the
  announced `Retry-After` (capped) and does not use up an attempt. Other 4xx (bad token)
  fail the run at once.
* A page that is not valid JSON (truncated, HTML error page) is retried like a 5xx. If it
  stays malformed, its raw body goes to quarantine (`malformed_page`) and the run stops
  paginating at the last good page: the safe point. Everything before it is landed and
  confirmed with the watermark of that point (inclusive `updated_since` + `seen` make the
  resume exact), so the next run re-reads from exactly there and nothing is lost or
  doubled. The counts say `complete: false`.
* Inside a good page, an element that is not an object with a transaction_id and a
  parseable updated_at is quarantined (`malformed_record`) with its raw text; field
  content is the standardize stage's business. A hash of its text joins `seen` (at the
  updated_at of the record served before it), so the overlap does not quarantine it twice.
* Each page with something to land is written as received (`page-NNNN.json`, the API's
  envelope); a page from which records were skipped or quarantined is written with only
  the landed records (each byte for byte as received) in the same envelope. Then the batch is published to
  `raw/api/ingest_date=D/batch=B/` and confirmed with the new watermark in one warehouse
  transaction (`ExtractState`). Runs are serialised by a PostgreSQL advisory lock.
* If the API stays unavailable, what was landed so far is published and confirmed, then
  `PartnerApiUnavailable` is raised so the task fails and its retry resumes.

Counts: `read = landed + quarantined + skipped_seen` (records in good pages);
`malformed_pages` counts page bodies quarantined whole (their records are read next run).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache

import requests

from fluxo.lake import Lake
from fluxo_platform.settings import get_settings
from fluxo.tokenize import has_pan, mask_pans
from fluxo_extract.landing import ExtractState, LandingBatch
from fluxo_platform.warehouse import warehouse_connection

log = logging.getLogger(__name__)

SOURCE = "api"
MALFORMED_PREFIX = "malformed:"
PAN_ID_PREFIX = "pan-id:"
STREAM = "transactions"
ENDPOINT = "transactions"
DEFAULT_TIMEOUT = 30.0


class PartnerApiError(RuntimeError):
    """The API refused the request (4xx other than 429): retrying will not help."""


class PartnerApiUnavailable(RuntimeError):
    """The API kept failing (5xx, network errors) after every attempt."""


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def _parse_array(text: str, i: int) -> tuple[list, list[str], int]:
    """The values of a JSON array whose first value starts at i, their texts, and the index after `]`."""
    scan, space = _DECODER.scan_once, _SPACE.match
    values: list = []
    texts: list[str] = []
    if text[i:i + 1] == "]":
        return values, texts, i + 1
    while True:
        start = i
        try:
            value, i = scan(text, i)
        except StopIteration as stop:
            raise ValueError(f"expecting a value at char {stop.value}") from None
        values.append(value)
        texts.append(text[start:i])
        c = text[i:i + 1]
        if c and c in " \t\n\r":
            i = space(text, i).end()
            c = text[i:i + 1]
        if c == "]":
            return values, texts, i + 1
        if c != ",":
            raise ValueError(f"expected ',' or ']' at char {i}")
        i = space(text, i + 1).end()
        if text[i:i + 1] == "]":
            raise ValueError(f"trailing comma at char {i}")


def parse_page(text: str) -> tuple[list, list[str], object]:
    """(records, the raw text of each, next_cursor) of a page envelope; ValueError if it is not one.

    A strict JSON object walk with the C scanner for every value, keeping where each record's
    text starts and ends, so a page can be landed with some records left out, byte for byte."""
    def skip(i: int) -> int:
        return _SPACE.match(text, i).end()

    def expect(i: int, chars: str) -> str:
        if text[i:i + 1] not in chars or i >= len(text):
            raise ValueError(f"expected one of {chars!r} at char {i}")
        return text[i]

    records: list | None = None
    raws: list[str] = []
    cursor = None
    i = skip(0)
    expect(i, "{")
    i = skip(i + 1)
    while text[i:i + 1] != "}":
        key, i = _DECODER.raw_decode(text, i)
        if not isinstance(key, str):
            raise ValueError(f"object key expected at char {i}")
        i = skip(i)
        expect(i, ":")
        i = skip(i + 1)
        if key == "data" and text[i:i + 1] == "[":
            records, raws, i = _parse_array(text, skip(i + 1))
        else:
            value, i = _DECODER.raw_decode(text, i)
            if key == "next_cursor":
                cursor = value
        i = skip(i)
        if expect(i, ",}") == ",":
            i = skip(i + 1)
            if text[i:i + 1] == "}":
                raise ValueError(f"trailing comma at char {i}")
    if skip(i + 1) != len(text):
        raise ValueError(f"extra data after the page at char {i + 1}")
    if records is None:
        raise ValueError("no data list in the page")
    if cursor is not None and not isinstance(cursor, str):
        raise ValueError("next_cursor is not a string")
    return records, raws, cursor


class MalformedPage(Exception):
    def __init__(self, body: bytes, detail: str) -> None:
        super().__init__(detail)
        self.body, self.detail = body, detail


@lru_cache(maxsize=65536)  # records of a page share few distinct seconds
def _utc(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if ts.microsecond else "%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Watermark:
    """Newest updated_at landed, and the versions landed within `overlap` of it (plus markers of
    the malformed records quarantined there: `malformed:<hash of the text>`)."""

    updated_at: datetime | None
    overlap: timedelta
    seen: set[tuple[str, datetime]] = field(default_factory=set)

    @classmethod
    def load(cls, value: dict | None, overlap: timedelta) -> "Watermark":
        if not value or not value.get("updated_at"):
            return cls(None, overlap)
        seen = {(tid, _utc(ts)) for ts, ids in value.get("seen", {}).items() for tid in ids}
        return cls(_utc(value["updated_at"]), overlap, seen)

    def __post_init__(self) -> None:
        self.seen_malformed = {tid for tid, _ in self.seen if tid.startswith(MALFORMED_PREFIX)}

    @property
    def since(self) -> datetime | None:
        return None if self.updated_at is None else self.updated_at - self.overlap

    def advance(self, landed: list[tuple[str, datetime]]) -> "Watermark":
        newest = max([self.updated_at, *(ts for _, ts in landed)], key=lambda t: t or datetime.min.replace(tzinfo=timezone.utc))
        if newest is None:
            return self
        floor = newest - self.overlap
        seen = {v for v in self.seen if v[1] >= floor} | {v for v in landed if v[1] >= floor}
        return Watermark(newest, self.overlap, seen)

    def to_json(self) -> dict | None:
        if self.updated_at is None:
            return None
        by_ts: dict[str, list[str]] = {}
        for tid, ts in sorted(self.seen, key=lambda v: (v[1], v[0])):
            by_ts.setdefault(_iso(ts), []).append(tid)
        return {"updated_at": _iso(self.updated_at), "overlap_seconds": self.overlap.total_seconds(), "seen": by_ts}


class PartnerApi:
    """GET pages through HttpHook's session with timeouts, backoff + jitter and Retry-After."""

    def __init__(self, conn_id: str, max_attempts: int, backoff_base: float, backoff_max: float,
                 max_retry_after: float, rng: random.Random | None = None) -> None:
        # imported here: the HTTP provider loads aiohttp (0.2 s), and every task of the DAG file imports this module
        from airflow.providers.http.hooks.http import HttpHook

        self.hook = HttpHook(method="GET", http_conn_id=conn_id)
        connection = self.hook.get_connection(conn_id)
        headers = {"Accept": "application/json"}
        if connection.password and not connection.login:  # a login means basic auth, which HttpHook sets
            headers["Authorization"] = f"Bearer {connection.password}"
        self.session = self.hook.get_conn(headers=headers, extra_options={"check_response": False})
        self.url = self.hook.url_from_endpoint(ENDPOINT)
        self.timeout = float(self.hook.merged_extra.get("timeout") or DEFAULT_TIMEOUT)
        self.max_attempts, self.backoff_base, self.backoff_max = max_attempts, backoff_base, backoff_max
        self.max_retry_after = max_retry_after
        self.rng = rng or random.Random()
        self.retries = 0

    def _backoff(self, attempt: int) -> float:
        return self.rng.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))

    def _retry_after(self, response: requests.Response, attempt: int) -> float:
        value = response.headers.get("Retry-After", "")
        try:
            wait = float(value)
        except ValueError:
            try:  # the HTTP-date form
                from email.utils import parsedate_to_datetime

                wait = (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
            except (TypeError, ValueError):
                wait = self._backoff(attempt)
        return min(max(wait, 0.0), self.max_retry_after)

    def fetch(self, params: dict) -> tuple[bytes, tuple[list, list[str], object]]:
        """One page: (raw body, parse_page of it). Raises MalformedPage if every attempt was bad."""
        prepped = self.session.prepare_request(requests.Request("GET", self.url, params=params))
        options = {"timeout": self.timeout, "check_response": False}
        attempt, bad = 0, None
        while attempt < self.max_attempts:
            attempt += 1
            try:
                response = self.hook.run_and_check(self.session, prepped, options)
                body = response.content
            except requests.RequestException as exc:  # refused, reset, timed out, cut transfer
                log.warning("partner API: %s (attempt %d/%d)", exc, attempt, self.max_attempts)
                self._pause(attempt)
                continue
            status = response.status_code
            if status == 429:
                attempt -= 1  # throttling is the API pacing us, not a failure
                self._sleep(self._retry_after(response, attempt + 1))
                continue
            if status >= 500:
                log.warning("partner API: HTTP %d (attempt %d/%d)", status, attempt, self.max_attempts)
                self._pause(attempt)
                continue
            if status >= 400:
                raise PartnerApiError(mask_pans(f"partner API refused {prepped.url}: HTTP {status} {body[:200]!r}"))
            try:
                return body, parse_page(body.decode("utf-8"))
            except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
                bad = MalformedPage(body, f"{type(exc).__name__}: {exc}")
                log.warning("partner API: malformed page (%s) (attempt %d/%d)", exc, attempt, self.max_attempts)
                self._pause(attempt)
        if bad is not None:
            raise bad
        raise PartnerApiUnavailable(f"partner API failed {self.max_attempts} times for {prepped.url}")

    def _sleep(self, seconds: float) -> None:
        self.retries += 1
        time.sleep(seconds)

    def _pause(self, attempt: int) -> None:
        """Back off before the next attempt (none after the last)."""
        if attempt < self.max_attempts:
            self._sleep(self._backoff(attempt))

    def close(self) -> None:
        self.session.close()


def _marker(prefix: str, text: str) -> str:
    """What the watermark remembers in place of a text it must not keep (a card number, a malformed record)."""
    return prefix + hashlib.sha256(text.encode()).hexdigest()[:24]


def _version(record) -> tuple[str, datetime] | None:
    """(transaction_id, updated_at) of a well-formed record, else None."""
    if not isinstance(record, dict):
        return None
    tid, updated = record.get("transaction_id"), record.get("updated_at")
    if not isinstance(tid, str) or not tid or not isinstance(updated, str):
        return None
    try:
        # a card number as an id is remembered by a hash: the watermark lives in the warehouse
        return (_marker(PAN_ID_PREFIX, tid) if has_pan(tid) else tid), _utc(updated)
    except ValueError:
        return None


def extract_partner_api(
    ingest_date: str,
    conn_id: str = "fluxo_partner_api",
    conn=None,
    *,
    page_limit: int = 1000,
    overlap_seconds: float = 300.0,
    max_attempts: int = 10,
    backoff_base: float = 0.5,
    backoff_max: float = 30.0,
    max_retry_after: float = 120.0,
    max_pages: int | None = None,
) -> dict:
    """Land new and updated partner API records under raw/api/ingest_date=D; see the module doc.

    `conn` is a psycopg 3 connection to the warehouse (default: the fluxo_warehouse
    connection); `max_pages` bounds one run (the rest follows next run)."""
    own_conn = conn is None
    conn = warehouse_connection() if own_conn else conn
    lock = f"fluxo-extract-{SOURCE}:{conn_id}"
    try:
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (lock,))
        try:
            api = PartnerApi(conn_id, max_attempts, backoff_base, backoff_max, max_retry_after)
            try:
                return _extract(ingest_date, api, ExtractState(conn), page_limit,
                                timedelta(seconds=overlap_seconds), max_pages)
            finally:
                api.close()
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (lock,))
    finally:
        if own_conn:
            conn.close()


def _extract(ingest_date: str, api: PartnerApi, state: ExtractState, page_limit: int, overlap: timedelta,
             max_pages: int | None) -> dict:
    started = time.monotonic()
    watermark = Watermark.load(state.watermark(SOURCE, STREAM), overlap)
    batch = LandingBatch(Lake(get_settings().lake_root), SOURCE, ingest_date)
    counts = {"pages": 0, "read": 0, "landed": 0, "quarantined": 0, "skipped_seen": 0, "malformed_pages": 0}
    remembered: list[tuple[str, datetime]] = []  # landed versions and quarantined-record markers
    position = watermark.since  # updated_at of the last well-formed record served
    malformed_at_next: list[tuple[str, None]] = []  # malformed records served before any position was known
    params: dict = {"limit": page_limit}
    if watermark.since is not None:
        params["updated_since"] = _iso(watermark.since)
    complete, failure = False, None
    try:
        while max_pages is None or counts["pages"] < max_pages:
            try:
                body, (records, raws, cursor) = api.fetch(params)
            except MalformedPage as bad:
                # Quarantine the body and stop at the last good page (the safe point); see the module doc.
                batch.quarantine("malformed_page", bad.body, f"{bad.detail}; request {json.dumps(params)}")
                counts["malformed_pages"] += 1
                break
            counts["pages"] += 1
            keep: list[str] = []
            page_versions: list[tuple[str, datetime]] = []
            counts["read"] += len(records)
            for record, raw in zip(records, raws):
                version = _version(record)
                if version is None:
                    # a malformed record is remembered by a hash of its text at the position it was
                    # served (the updated_at before it), so the overlap does not quarantine it again
                    marker = _marker(MALFORMED_PREFIX, raw)
                    if marker in watermark.seen_malformed:
                        counts["skipped_seen"] += 1
                        continue
                    batch.quarantine("malformed_record", record if isinstance(record, str) else raw,
                                     "not an object with transaction_id and updated_at")
                    counts["quarantined"] += 1
                    (malformed_at_next if position is None else page_versions).append((marker, position))
                    continue
                position = version[1]
                if malformed_at_next:
                    page_versions.extend((marker, position) for marker, _ in malformed_at_next)
                    malformed_at_next.clear()
                if version in watermark.seen:
                    counts["skipped_seen"] += 1
                else:
                    keep.append(raw)
                    page_versions.append(version)
            if keep:
                data = body if len(keep) == len(records) else "".join(
                    ('{"data": [', ", ".join(keep), '], "next_cursor": ', json.dumps(cursor), "}")).encode()
                batch.write(f"page-{len(batch.files) + 1:04d}.json", data, records=len(keep))
            remembered.extend(page_versions)
            if not cursor:
                complete = True
                break
            params = {"limit": page_limit, "cursor": cursor}
    except (PartnerApiUnavailable, PartnerApiError) as exc:
        failure = exc
    counts["landed"] = batch.landed_records
    counts["retries"] = api.retries
    new_watermark = watermark.advance(remembered)
    batch.publish()
    counts.update(complete=complete, watermark=new_watermark.updated_at and _iso(new_watermark.updated_at),
                  seconds=round(time.monotonic() - started, 3))
    state.confirm(batch, STREAM, new_watermark.to_json(), {k: v for k, v in counts.items() if k != "watermark"})
    counts["batch_id"] = batch.batch_id
    log.info("partner API: %s", counts)
    if failure is not None:
        log.error("partner API: stopped early, landed so far is confirmed: %s", counts)
        raise failure
    return counts
