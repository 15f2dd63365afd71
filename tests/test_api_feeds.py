"""Dashboard feeds over real HTTP: the OData v4 service (read and paged by an independent OData
client), schemathesis over the OpenAPI document, and the dashboard page in headless Chromium."""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pyarrow as pa
import pytest

from fluxo.contract import DAILY_METRICS, METRIC_GRAINS, OUTLIER_METHODS, OUTLIER_SUMMARY
from fluxo_platform.warehouse import replace_days
from tests.conftest import ApiService

REPO_ROOT = Path(__file__).resolve().parents[1]
FIRST = date(1999, 4, 1)
DAYS = 40
MERCHANTS = 30  # 1,200 merchant_daily rows
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = REPO_ROOT / "docs" / "img" / "dashboard.png"


@pytest.fixture(scope="module")
def credentials(api) -> tuple[str, str]:
    return api.new_client("feeds", "metrics:read", "runs:read", "quality:read", "outliers:read", "transactions:read",
                          "fraud:read")


@pytest.fixture(scope="module")
def bearer(api, credentials) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.token(*credentials)}"}


def _grain_row(contract, day: date, i: int) -> dict:
    row = {}
    for column in contract.columns:
        if column.name == "event_date":
            row[column.name] = day
        elif column.name == "merchant_id":
            row[column.name] = f"m{i:03d}"
        elif column.name == "reporting_currency":
            row[column.name] = "BRL"
        elif column.type.startswith("decimal"):
            row[column.name] = Decimal(f"{100 + i}.{(day.day + i) % 100:02d}")
        elif column.type == "long":
            row[column.name] = 1000 + 7 * i + day.day
        elif column.type == "double":
            row[column.name] = round(0.80 + (i % 10) / 100 + day.day / 1000, 4)
    return row


def _wave(day: date, base: float, swing: float, period: float = 7.0) -> float:
    """A weekly rhythm with a slow drift, so the dashboard has something to draw."""
    d = (day - FIRST).days
    return base + swing * math.sin(2 * math.pi * d / period) + swing * 0.4 * math.sin(d / 5.3)


@pytest.fixture(scope="module")
def loaded(warehouse_url):
    """40 days of daily metrics, 30 merchants a day, outliers and pipeline runs, far in the past."""
    days = [FIRST + timedelta(days=d) for d in range(DAYS)]
    daily = []
    for day in days:
        row = _grain_row(DAILY_METRICS, day, 0)
        count = int(_wave(day, 20_000, 3_000))
        row.update(transaction_count=count, amount_total=Decimal(f"{count * _wave(day, 160, 12, 11):.2f}"),
                   approval_rate=round(_wave(day, 0.93, 0.02, 9), 4),
                   fraud_alert_count=int(_wave(day, 60, 25, 5)))
        row.update(fraud_alert_rate=row["fraud_alert_count"] / count)
        daily.append(row)
    merchant_contract, _ = METRIC_GRAINS["merchant_daily"]
    merchants = [_grain_row(merchant_contract, day, i) for day in days for i in range(MERCHANTS)]
    outliers = [{"event_date": day, "method": method, "mcc": "5411", "outlier_count": max(1, int(_wave(day, 9, 6, 5)) + k),
                 "max_score": 7.5, "amount_reporting_total": Decimal("12345.67")}
                for day in days for k, method in enumerate(OUTLIER_METHODS)]
    run_ids = [f"test-feeds-{day}" for day in days]
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        replace_days(conn, "metrics", "daily_transactions", pa.Table.from_pylist(daily, schema=DAILY_METRICS.arrow_schema()),
                     extra={"run_id": "test-feeds"})
        replace_days(conn, "metrics", "merchant_daily",
                     pa.Table.from_pylist(merchants, schema=merchant_contract.arrow_schema()), extra={"run_id": "test-feeds"})
        replace_days(conn, "metrics", "outlier_summary",
                     pa.Table.from_pylist(outliers, schema=OUTLIER_SUMMARY.arrow_schema()), extra={"run_id": "test-feeds"})
        for run_id, day in zip(run_ids, days):
            counts = {"quarantined": int(_wave(day, 300, 120, 6)), "duplicates_dropped": int(_wave(day, 800, 200, 4))}
            conn.execute("INSERT INTO audit.pipeline_runs (run_id, dag_id, ingest_date, state, counts)"
                         " VALUES (%s, 'transactions_etl', %s, 'success', %s)", (run_id, day, json.dumps(counts)))
    yield {"daily": daily, "merchants": merchants}
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        replace_days(conn, "metrics", "daily_transactions", DAILY_METRICS.arrow_schema().empty_table(), days=days)
        replace_days(conn, "metrics", "merchant_daily", merchant_contract.arrow_schema().empty_table(), days=days)
        replace_days(conn, "metrics", "outlier_summary", OUTLIER_SUMMARY.arrow_schema().empty_table(), days=days)
        conn.execute("DELETE FROM audit.pipeline_runs WHERE run_id = ANY(%s)", (run_ids,))


# --- OData ------------------------------------------------------------------------------------


def test_service_document_and_metadata(api):
    service = httpx.get(f"{api.base_url}/odata/").json()
    names = [s["name"] for s in service["value"]]
    assert {"DailyMetrics", "MerchantDailyMetrics", "OutlierSummary"} <= set(names)
    metadata = httpx.get(f"{api.base_url}/odata/$metadata")
    assert metadata.headers["odata-version"] == "4.0" and metadata.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(metadata.text)
    ns = {"edm": "http://docs.oasis-open.org/odata/ns/edm"}
    daily = root.find(".//edm:EntityType[@Name='DailyMetricsRow']", ns)
    props = {p.get("Name"): p.get("Type") for p in daily.findall("edm:Property", ns)}
    assert list(props) == DAILY_METRICS.names
    assert props["event_date"] == "Edm.Date" and props["amount_total"] == "Edm.Decimal"
    assert props["transaction_count"] == "Edm.Int64" and props["approval_rate"] == "Edm.Double"
    assert [k.get("Name") for k in daily.findall("edm:Key/edm:PropertyRef", ns)] == ["event_date"]


def _feed(api: ApiService, headers: dict, entity_set: str, **params) -> httpx.Response:
    return httpx.get(f"{api.base_url}/odata/{entity_set}", params=params, headers=headers, timeout=60)


def test_filter_select_orderby_top_skip_count(api, bearer, loaded):
    where = "event_date ge 1999-04-03 and event_date le 1999-04-05 and merchant_id eq 'm007'"
    body = _feed(api, bearer, "MerchantDailyMetrics", **{"$filter": where, "$count": "true",
                                                          "$select": "event_date,merchant_id,amount_total"}).json()
    assert body["@odata.count"] == 3 and body["@odata.context"].endswith("$metadata#MerchantDailyMetrics")
    assert [list(r) for r in body["value"]] == [["event_date", "merchant_id", "amount_total"]] * 3
    assert [r["event_date"] for r in body["value"]] == ["1999-04-03", "1999-04-04", "1999-04-05"]
    assert isinstance(body["value"][0]["amount_total"], float) or isinstance(body["value"][0]["amount_total"], int)
    top = _feed(api, bearer, "DailyMetrics", **{"$filter": "event_date ge 1999-04-01 and event_date lt 1999-05-11",
                                                "$orderby": "transaction_count desc", "$top": "3", "$skip": "1"}).json()
    counts = sorted((r["transaction_count"] for r in loaded["daily"]), reverse=True)
    assert [r["transaction_count"] for r in top["value"]] == counts[1:4] and "@odata.nextLink" not in top
    count = httpx.get(f"{api.base_url}/odata/DailyMetrics/$count", headers=bearer,
                      params={"$filter": "(event_date ge 1999-04-01) and event_date le 1999-04-10"})
    assert count.text == "10"
    ieee = _feed(api, {**bearer, "Accept": "application/json;IEEE754Compatible=true"}, "DailyMetrics",
                 **{"$filter": "event_date eq 1999-04-01"}).json()["value"][0]
    assert ieee["amount_total"] == f"{loaded['daily'][0]['amount_total']:.2f}" and isinstance(ieee["transaction_count"], str)


@pytest.mark.parametrize(("params", "field"), [
    ({"$filter": "amount_total gt 5"}, "$filter"),  # not a key column
    ({"$filter": "event_date eq 'x'; DROP TABLE metrics.daily_transactions"}, "$filter"),
    ({"$filter": "merchant_id eq 'a' or merchant_id eq 'b'"}, "$filter"),
    ({"$filter": "event_date eq 1999-04-01 and ("}, "$filter"),
    ({"$filter": "merchant_id eq 5"}, "$filter"),
    ({"$orderby": "nope desc"}, "$orderby"),
    ({"$select": "event_date,secret"}, "$select"),
    ({"$top": "-1"}, "$top"),
    ({"$skip": str(2**63)}, "$skip"),
    ({"$skiptoken": "k" + "A" * 20}, "$skiptoken"),
], ids=["non-key", "injection", "or", "unclosed", "type", "orderby", "select", "top", "skip", "skiptoken"])
def test_bad_query_options_are_422_naming_them(api, bearer, params, field):
    response = _feed(api, bearer, "MerchantDailyMetrics", **params)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


def test_server_driven_paging_by_keyset_and_by_offset(api, bearer, loaded):
    where = {"$filter": "event_date ge 1999-04-01 and event_date le 1999-05-10"}
    seen, url, pages = [], f"{api.base_url}/odata/MerchantDailyMetrics", 0
    params, headers = where, {**bearer, "Prefer": "odata.maxpagesize=500"}
    while url:
        response = httpx.get(url, params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [(r["event_date"], r["merchant_id"]) for r in body["value"]]
        url, params, pages = body.get("@odata.nextLink"), None, pages + 1
        if url:
            assert url.startswith(f"{api.base_url}/odata/MerchantDailyMetrics?") and "%24skiptoken=k" in url
    assert pages == 3 and len(seen) == DAYS * MERCHANTS == len(set(seen)) and seen == sorted(seen)
    ordered = _feed(api, headers, "MerchantDailyMetrics", **where, **{"$orderby": "amount_total desc"}).json()
    assert "%24skiptoken=o500" in ordered["@odata.nextLink"]


def test_basic_client_credentials_work_on_the_feed(api, credentials, loaded):
    basic = base64.b64encode(":".join(credentials).encode()).decode()
    response = _feed(api, {"Authorization": f"Basic {basic}"}, "DailyMetrics", **{"$top": "2"})
    assert response.status_code == 200 and len(response.json()["value"]) == 2
    wrong = base64.b64encode(f"{credentials[0]}:nope".encode()).decode()
    refused = _feed(api, {"Authorization": f"Basic {wrong}"}, "DailyMetrics")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    # Basic is for the feed only
    assert httpx.get(f"{api.base_url}/metrics/daily", params={"from": "1999-04-01", "to": "1999-04-02"},
                     headers={"Authorization": f"Basic {basic}"}).status_code == 401


def test_an_odata_client_library_reads_and_pages_through_a_feed(api, bearer, loaded):
    """python-odata (an independent OData v4 client): reflect $metadata, query, follow nextLink."""
    import requests
    from odata import ODataService

    session = requests.Session()
    session.headers.update({**bearer, "Prefer": "odata.maxpagesize=250"})
    service = ODataService(f"{api.base_url}/odata/", reflect_entities=True, session=session)
    merchants = service.entities["MerchantDailyMetrics"]
    query = service.query(merchants).filter(merchants.merchant_id == "m003")
    last = (FIRST + timedelta(days=DAYS - 1)).isoformat()
    rows = [(str(r.event_date)[:10], r.merchant_id, Decimal(str(r.amount_total))) for r in query]
    expected = [(r["event_date"].isoformat(), r["merchant_id"], r["amount_total"]) for r in loaded["merchants"]
                if r["merchant_id"] == "m003"]
    assert [row for row in rows if FIRST.isoformat() <= row[0] <= last] == expected
    everything = [(str(r.event_date)[:10], r.merchant_id) for r in service.query(merchants)]
    ours = [row for row in everything if FIRST.isoformat() <= row[0] <= last]
    assert len(ours) == len(set(ours)) == DAYS * MERCHANTS  # more than four pages of 250


# --- schemathesis -----------------------------------------------------------------------------


def test_schemathesis_finds_no_server_error_and_no_undocumented_status(api, credentials, tmp_path, loaded):
    token = api.token(*credentials)
    config = tmp_path / "schemathesis.toml"
    config.write_text(f"""
headers = {{ Authorization = "Bearer {token}" }}
[generation]
max-examples = 8
[parameters]
"query.from" = "1999-04-01"
"query.to" = "1999-04-10"
""")
    report = tmp_path / "report"
    command = [str(Path(sys.executable).parent / "st"), "--config-file", str(config), "run",
               f"{api.base_url}/openapi.json", "--checks", "not_a_server_error,status_code_conformance",
               "--phases", "examples,coverage,fuzzing", "--max-time", "45", "--workers", "2",
               "--exclude-path", "/auth/token", "--request-timeout", "20", "--report", "junit",
               "--report-dir", str(report)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=170, cwd=tmp_path,
                          env={**os.environ, "SCHEMATHESIS_HOOKS": ""})
    tail = (done.stdout + done.stderr)[-6000:]
    assert done.returncode == 0, tail
    print(tail)


# --- the dashboard page -----------------------------------------------------------------------


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_dashboard_signs_in_calls_the_api_and_draws(api, credentials, loaded, tmp_path):
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            calls, errors = [], []
            page.on("request", lambda r: calls.append((r.url, r.headers.get("authorization", ""))))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{api.base_url}/dashboard/")
            page.fill("#client_id", credentials[0])
            page.fill("#client_secret", credentials[1])
            page.click("#login button[type=submit]")
            page.wait_for_selector("#range:not([hidden])")
            page.fill("#from", "1999-04-01")
            page.fill("#to", "1999-05-10")
            page.click("#range button[type=submit]")
            page.wait_for_selector("body[data-state=drawn]", timeout=30_000)
            drawn = page.eval_on_selector_all(".chart canvas", "els => els.length")
            titles = page.eval_on_selector_all(".chart h2", "els => els.map(e => e.textContent)")
            assert drawn == len(titles) == 7, titles
            assert any(t.startswith("Transactions per day") for t in titles)
            assert any(t.startswith("Fraud alerts per day") for t in titles)
            assert any(t.startswith("Quarantined per day") for t in titles)
            # the page called the API with its token, and nowhere else
            data_calls = [(u, a) for u, a in calls if "/metrics/daily" in u]
            assert data_calls and all(a.startswith("Bearer ") for _, a in data_calls)
            assert all(u.startswith(api.base_url) for u, _ in calls)
            assert errors == []
            # a token is in memory only: nothing in storage or cookies
            assert page.evaluate("localStorage.length + sessionStorage.length") == 0 and page.context.cookies() == []
            # FLUXO_API_SCREENSHOT=1 refreshes the picture in the docs
            shot = SCREENSHOT if os.environ.get("FLUXO_API_SCREENSHOT") else tmp_path / "dashboard.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert 10_000 < shot.stat().st_size < 300_000
