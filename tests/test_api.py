"""The query API over real HTTP (uvicorn subprocess) against the real, migrated warehouse of the local stack:
tokens and the JWT attack set, the metric grains, paging, errors, audit, health and packaging.

Every test shares conftest's `api_service` (one server); the clients they use are made with the CLI.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import httpx
import jwt
import psycopg
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import fluxo
from fluxo.contract import DAILY_METRICS, METRIC_GRAINS, OUTLIER_SUMMARY
from fluxo_platform.warehouse import replace_days
from tests.conftest import TEST_HOME, ApiService, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
API_DIR = REPO_ROOT / "api"

CLIENT_ID = f"bi-dashboards-{uuid.uuid4().hex[:8]}"
CREDENTIALS: dict[str, str] = {}


@pytest.fixture(scope="module")
def api(api_service) -> ApiService:
    CREDENTIALS[CLIENT_ID] = api_service.create_client(CLIENT_ID, "metrics:read")
    return api_service


@pytest.fixture(scope="module")
def client(api):
    with httpx.Client(base_url=api.base_url, timeout=30) as http:
        yield http


def _request_id() -> str:
    return f"test-{uuid.uuid4().hex}"


def _token(client: httpx.Client, **form: str) -> httpx.Response:
    body = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CREDENTIALS[CLIENT_ID], **form}
    return client.post("/auth/token", data=body, headers={"X-Request-ID": _request_id()})


@pytest.fixture(scope="module")
def access_token(client) -> str:
    response = _token(client)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, default=str).encode()).rstrip(b"=").decode()


def _public_pem(api: ApiService) -> bytes:
    key, _ = api.signing_key()
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- tokens -----------------------------------------------------------------


def test_token_is_issued_for_a_client_made_with_the_cli(api, client):
    response = _token(client)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900 and body["scope"] == "metrics:read"
    assert response.headers["cache-control"] == "no-store"
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "RS256" and header["kid"] == api.signing_key()[1]
    jwks = client.get("/.well-known/jwks.json").json()
    public = jwt.PyJWK({k: v for k, v in jwks["keys"][-1].items()}).key
    claims = jwt.decode(body["access_token"], public, algorithms=["RS256"], audience=api.AUDIENCE, issuer=api.ISSUER)
    assert claims["sub"] == CLIENT_ID and claims["scope"] == "metrics:read"
    assert claims["exp"] - claims["iat"] == 900 and claims["jti"]


def test_token_accepts_http_basic_client_authentication(client):
    basic = base64.b64encode(f"{CLIENT_ID}:{CREDENTIALS[CLIENT_ID]}".encode()).decode()
    response = client.post("/auth/token", data={"grant_type": "client_credentials", "scope": "metrics:read"},
                           headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "metrics:read"


def test_token_is_refused_for_a_wrong_client(api, client):
    victim = f"victim-{uuid.uuid4().hex[:6]}"
    secret = api.create_client(victim, "metrics:read")
    for client_id, client_secret in [(victim, "not-the-secret"), ("someone-else", secret), (victim, "")]:
        response = client.post("/auth/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                    "client_secret": client_secret})
        assert response.status_code == 401, (client_id, response.text)
        body = response.json()
        assert body["error"] == "invalid_client" and body["status"] == 401 and "access_token" not in body


def test_token_refuses_other_grants_and_unknown_scopes(client):
    assert _token(client, grant_type="password").json()["error"] == "unsupported_grant_type"
    response = _token(client, scope="metrics:read admin")
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


# --- metrics ----------------------------------------------------------------


def _metric_row(day: date, count: int, total: str) -> dict:
    approved = count - 2
    return {
        "event_date": day, "transaction_count": count, "amount_total": Decimal(total),
        "amount_avg": (Decimal(total) / count).quantize(Decimal("0.01")), "amount_min": Decimal("0.10"),
        "amount_max": Decimal("9999999999999999.99"), "approved_count": approved, "declined_count": 1,
        "reversed_count": 1, "approval_rate": approved / count, "distinct_customers": count - 1,
        "distinct_merchants": 3, "reporting_currency": "BRL", "fraud_alert_count": 1, "fraud_alert_rate": 1 / count,
    }


@pytest.fixture(scope="module")
def metric_rows(warehouse_url):
    # Days far in the past so a shared warehouse's own data never overlaps.
    rows = [_metric_row(date(1999, 1, 1) + timedelta(days=i), 10 + i, f"{1000 + i}.50") for i in range(3)]
    outside = _metric_row(date(1999, 1, 10), 7, "70.00")
    loaded = pa.Table.from_pylist([rows[2], outside, rows[0], rows[1]], schema=DAILY_METRICS.arrow_schema())
    days = loaded.column("event_date").to_pylist()
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        replace_days(conn, "metrics", "daily_transactions", loaded, extra={"run_id": "test-api"})
    yield rows
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        replace_days(conn, "metrics", "daily_transactions", loaded.slice(0, 0), days=days)


def _as_json(row: dict) -> dict:
    """The documented encoding: decimals as strings with 2 places, dates ISO, counts integers."""
    out = {}
    for column in DAILY_METRICS.columns:
        value = row[column.name]
        if column.type.startswith("decimal"):
            out[column.name] = f"{value:.2f}"
        elif column.type == "date":
            out[column.name] = value.isoformat()
        else:
            out[column.name] = value
    return out


def test_daily_metrics_equal_the_rows_in_the_warehouse(client, access_token, metric_rows):
    response = client.get("/metrics/daily", params={"from": "1999-01-01", "to": "1999-01-09"},
                          headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == [_as_json(row) for row in metric_rows]
    assert body[0]["amount_total"] == "1000.50" and body[0]["amount_max"] == "9999999999999999.99"
    assert list(body[0]) == DAILY_METRICS.names


def test_daily_metrics_as_csv(client, access_token, metric_rows):
    bearer = {"Authorization": f"Bearer {access_token}"}
    response = client.get("/metrics/daily", params={"from": "1999-01-01", "to": "1999-01-09", "format": "csv"},
                          headers=bearer)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    lines = response.text.splitlines()
    assert lines[0].split(",") == DAILY_METRICS.names
    assert [line.split(",")[:3] for line in lines[1:]] == [
        [r["event_date"].isoformat(), str(r["transaction_count"]), f"{r['amount_total']:.2f}"] for r in metric_rows]
    by_accept = client.get("/metrics/daily", params={"from": "1999-01-01", "to": "1999-01-09"},
                           headers={**bearer, "Accept": "text/csv"})
    assert by_accept.text == response.text


def test_daily_metrics_of_an_empty_window_is_an_empty_list(client, access_token, metric_rows):
    response = client.get("/metrics/daily", params={"from": "1998-01-01", "to": "1998-01-31"},
                          headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 200 and response.json() == []


def _other_rsa_token(api: ApiService) -> str:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(api.claims(), other, algorithm="RS256", headers={"kid": api.signing_key()[1]})


def _hs_with_public_key(api: ApiService) -> str:
    """RS/HS confusion: HS256 keyed with the server's public key (PyJWT refuses to make one, so by hand)."""
    import hashlib
    import hmac

    head = _b64({"alg": "HS256", "typ": "JWT", "kid": api.signing_key()[1]})
    body = _b64({k: int(v.timestamp()) if isinstance(v, datetime) else v for k, v in api.claims().items()})
    signature = hmac.new(_public_pem(api), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


NOW = datetime.now(timezone.utc)
BAD_TOKENS = {
    "expired": lambda api: api.sign(iat=datetime.now(timezone.utc) - timedelta(hours=1),
                                     exp=datetime.now(timezone.utc) - timedelta(minutes=1)),
    "wrong-signature": _other_rsa_token,
    "alg-none": lambda api: f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': api.signing_key()[1]})}.{_b64(api.claims())}.",
    "hs256-with-the-public-key": _hs_with_public_key,
    "alg-hs512": lambda api: jwt.encode(api.claims(), secrets.token_urlsafe(48), algorithm="HS512",
                                        headers={"kid": api.signing_key()[1]}),
    "wrong-audience": lambda api: api.sign(aud="someone-else"),
    "wrong-issuer": lambda api: api.sign(iss="evil"),
    "issued-in-the-future": lambda api: api.sign(iat=datetime.now(timezone.utc) + timedelta(hours=1)),
    "no-expiry": lambda api: api.sign(exp=None),
    "unknown-kid": lambda api: jwt.encode(api.claims(), api.signing_key()[0], algorithm="RS256",
                                          headers={"kid": "no-such-key"}),
    "no-kid": lambda api: jwt.encode(api.claims(), api.signing_key()[0], algorithm="RS256"),
    "kid-path-injection": lambda api: jwt.encode(api.claims(), api.signing_key()[0], algorithm="RS256",
                                                 headers={"kid": "../../../etc/passwd"}),
    "expiry-in-the-year-10^22": lambda api: api.sign(exp=10**22 * 365 * 86400),
    "lifetime-over-the-cap": lambda api: api.sign(exp=datetime.now(timezone.utc) + timedelta(days=30)),
    "subject-of-1000-characters": lambda api: api.sign(sub="x" * 1000),
    "scope-of-a-wrong-type": lambda api: api.sign(scope=["metrics:read"]),
    "garbage": lambda api: "not.a.token",
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_are_refused_with_401(api, client, kind):
    request_id = _request_id()
    response = client.get("/metrics/daily", params={"from": "1999-01-01", "to": "1999-01-03"},
                          headers={"Authorization": f"Bearer {BAD_TOKENS[kind](api)}", "X-Request-ID": request_id})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    body = response.json()
    assert body["error"] == "invalid_token" and body["request_id"] == request_id
    audit = api.audit_row(request_id)
    assert audit["status_code"] == 401 and audit["principal"] is None
    assert json.loads(audit["detail"])["reason"] == body["error_description"]


def test_a_validly_signed_token_of_the_server_is_accepted(api, client, metric_rows):
    response = client.get("/metrics/daily", params={"from": "1999-01-01", "to": "1999-01-03"},
                          headers={"Authorization": f"Bearer {api.sign(sub=CLIENT_ID)}"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic Zm9vOmJhcg=="}, {"Authorization": "Bearer"}],
                         ids=["missing", "basic-scheme", "empty-bearer"])
def test_requests_without_a_bearer_token_are_refused_with_401(client, headers):
    response = client.get("/metrics/daily", params={"from": "1999-01-01", "to": "1999-01-03"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_token_without_the_metrics_scope_is_forbidden(api, client):
    request_id = _request_id()
    token = api.sign(sub=CLIENT_ID, scope="reports:read")
    response = client.get("/metrics/daily", params={"from": "1999-01-01", "to": "1999-01-03"},
                          headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id})
    assert response.status_code == 403 and response.json()["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    audit = api.audit_row(request_id)
    assert audit["status_code"] == 403 and audit["principal"] == CLIENT_ID


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"from": "1999-01-05", "to": "1999-01-01"}, "to", "must not be before"),
        ({"from": "1999-01-01", "to": "2000-01-02"}, "to", "at most 366 days"),
        ({"from": "1999-13-01", "to": "1999-12-31"}, "from", "valid date"),
        ({"from": "1999-01-01"}, "to", "Field required"),
    ],
    ids=["reversed", "too-long", "not-a-date", "missing-to"],
)
def test_bad_query_parameters_are_422_naming_the_field(client, access_token, params, field, message):
    response = client.get("/metrics/daily", params=params, headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request" and body["status"] == 422
    assert [e["field"] for e in body["errors"]] == [field]
    assert message in body["errors"][0]["message"]


def test_the_longest_allowed_window_is_accepted(client, access_token, metric_rows):
    response = client.get("/metrics/daily", params={"from": "1999-01-01", "to": "2000-01-01"},
                          headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 200 and len(response.json()) == len(metric_rows) + 1


# --- finer grains and the outlier summary ------------------------------------

GRAIN_PATHS = {"merchant_daily": "/metrics/merchants", "mcc_daily": "/metrics/mcc",
               "country_channel_daily": "/metrics/country-channel", "hourly": "/metrics/hourly"}
GRAIN_DAYS = [date(1999, 2, 1), date(1999, 2, 2)]


def _contract_row(contract, day: date, i: int) -> dict:
    """A valid row of `contract` for `day`; `i` varies the keys and the measures."""
    keys = {"merchant_id": f"m{i:03d}", "mcc": f"{5400 + i}", "country": ["BR", "US", "AR"][i % 3],
            "channel": ["pos", "ecommerce", "atm", "mobile", "moto"][i // 3 % 5],
            "event_hour": datetime(day.year, day.month, day.day, i % 24, tzinfo=timezone.utc),
            "method": ["mad_zscore", "iqr_fence", "customer_history"][i % 3], "reporting_currency": "BRL"}
    row = {}
    for column in contract.columns:
        if column.name == "event_date":
            row[column.name] = day
        elif column.name in keys:
            row[column.name] = keys[column.name]
        elif column.type.startswith("decimal"):
            row[column.name] = Decimal(f"{1000 + i}.{i % 100:02d}")
        elif column.type == "long":
            row[column.name] = 10 + i
        elif column.type == "double":
            row[column.name] = 0.5 + i / 1000
        else:
            raise AssertionError(f"no test value for {contract.name}.{column.name} ({column.type})")
    return row


def _from_json(contract, item: dict) -> dict:
    """Parse an API row back by the contract's documented encoding."""
    out = {}
    for column in contract.columns:
        value = item[column.name]
        if column.type.startswith("decimal"):
            assert re.fullmatch(r"-?[0-9]+\.[0-9]{2}", value), value
            value = Decimal(value)
        elif column.type == "date":
            value = date.fromisoformat(value)
        elif column.type == "timestamp":
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        out[column.name] = value
    return out


@pytest.fixture(scope="module")
def grain_rows(warehouse_url):
    """Rows of every finer grain and of the outlier summary on two days far in the past."""
    tables = {grain: METRIC_GRAINS[grain] for grain in GRAIN_PATHS} | {"outliers": (OUTLIER_SUMMARY, "outlier_summary")}
    loaded = {}
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        for grain, (contract, table) in tables.items():
            rows = [_contract_row(contract, day, i) for day in GRAIN_DAYS for i in range(7)]
            arrow = pa.Table.from_pylist(rows, schema=contract.arrow_schema())
            replace_days(conn, "metrics", table, arrow, extra={"run_id": "test-api"})
            loaded[grain] = (contract, sorted(rows, key=lambda r: tuple(r[k] for k in contract.key)))
    yield loaded
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        for grain, (contract, table) in tables.items():
            replace_days(conn, "metrics", table, contract.arrow_schema().empty_table(), days=GRAIN_DAYS)


WINDOW = {"from": "1999-02-01", "to": "1999-02-02"}


@pytest.mark.parametrize("grain", [*GRAIN_PATHS, "outliers"])
def test_every_grain_serves_its_warehouse_rows_in_key_order(client, access_token, grain_rows, grain):
    contract, expected = grain_rows[grain]
    path = GRAIN_PATHS.get(grain, "/metrics/outliers")
    response = client.get(path, params=WINDOW, headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [list(item) for item in body[:1]] == [contract.names]
    assert [_from_json(contract, item) for item in body] == expected
    assert "link" not in response.headers  # everything fit in one page


def _next(response: httpx.Response) -> str | None:
    link = response.headers.get("link")
    if link is None:
        return None
    assert link.endswith('>; rel="next"')
    return link[1:-len('>; rel="next"')]


def test_pages_follow_the_link_header_to_the_last_row(api, client, access_token, grain_rows):
    contract, expected = grain_rows["merchant_daily"]
    bearer = {"Authorization": f"Bearer {access_token}"}
    response = client.get("/metrics/merchants", params={**WINDOW, "limit": 4}, headers=bearer)
    pages = [response]
    while (following := _next(response)) is not None:
        assert following.startswith(api.base_url + "/metrics/merchants?") and "cursor=" in following
        response = client.get(following, headers=bearer)
        pages.append(response)
    assert [len(p.json()) for p in pages] == [4, 4, 4, 2]
    assert [_from_json(contract, item) for p in pages for item in p.json()] == expected
    # offset paging still works (bounded), and agrees with the cursor pages
    by_offset = client.get("/metrics/merchants", params={**WINDOW, "limit": 4, "offset": 4}, headers=bearer).json()
    assert by_offset == pages[1].json()


def test_the_link_header_ignores_the_host_header(api, client, access_token, grain_rows):
    response = client.get("/metrics/merchants", params={**WINDOW, "limit": 2},
                          headers={"Authorization": f"Bearer {access_token}", "Host": "evil.example",
                                   "X-Forwarded-Host": "evil.example"})
    assert response.status_code == 200
    assert _next(response).startswith(api.base_url + "/") and "evil" not in response.headers["link"]


def test_filters_narrow_the_rows(client, access_token, grain_rows):
    bearer = {"Authorization": f"Bearer {access_token}"}
    merchants = client.get("/metrics/merchants", params={**WINDOW, "merchant_id": "m003"}, headers=bearer).json()
    assert [(m["event_date"], m["merchant_id"]) for m in merchants] == [("1999-02-01", "m003"), ("1999-02-02", "m003")]
    outliers = client.get("/metrics/outliers", params={**WINDOW, "method": "iqr_fence"}, headers=bearer).json()
    expected = [r for r in grain_rows["outliers"][1] if r["method"] == "iqr_fence"]
    assert outliers and [o["mcc"] for o in outliers] == [r["mcc"] for r in expected]
    pos = client.get("/metrics/country-channel", params={**WINDOW, "channel": "pos", "country": "BR"},
                     headers=bearer).json()
    assert pos and {(r["country"], r["channel"]) for r in pos} == {("BR", "pos")}


@pytest.mark.parametrize(("path", "params", "field", "message"), [
    ("/metrics/outliers", {"limit": 0}, "limit", "greater than or equal to 1"),
    ("/metrics/outliers", {"limit": 10_001}, "limit", "less than or equal to 10000"),
    ("/metrics/outliers", {"offset": -1}, "offset", "greater than or equal to 0"),
    ("/metrics/outliers", {"offset": 2**63}, "offset", "less than or equal to 1000000"),
    ("/metrics/outliers", {"offset": 10**40}, "offset", "less than or equal to 1000000"),
    ("/metrics/outliers", {"method": "gut_feeling"}, "method", "Input should be"),
    ("/metrics/outliers", {"mcc": "54x1"}, "mcc", "should match pattern"),
    ("/metrics/outliers", {"cursor": "bm90LWEtY3Vyc29y"}, "cursor", "not a cursor"),
    ("/metrics/merchants", {"merchant_id": "\x00"}, "merchant_id", "NUL"),
    ("/metrics/merchants", {"merchant_id": "m" * 65}, "merchant_id", "at most 64 characters"),
    ("/metrics/merchants", {"from\x00": "x"}, "from\\x00", "NUL"),
], ids=["limit-0", "limit-too-big", "negative-offset", "offset-2^63", "offset-10^40", "unknown-method", "bad-mcc",
        "forged-cursor", "nul-filter", "oversized-filter", "nul-name"])
def test_bad_paging_and_filters_are_422_naming_the_field(client, access_token, path, params, field, message):
    response = client.get(path, params={**WINDOW, **params}, headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert errors[0]["field"] == field and message in errors[0]["message"], errors


@pytest.mark.parametrize("path", [*GRAIN_PATHS.values(), "/metrics/outliers"])
def test_every_grain_refuses_missing_and_bad_tokens(api, client, path):
    assert client.get(path, params=WINDOW).status_code == 401
    assert client.get(path, params=WINDOW, headers={"Authorization": f"Bearer {_other_rsa_token(api)}"}).status_code == 401
    no_scope = api.sign(sub=CLIENT_ID, scope="reports:read")
    assert client.get(path, params=WINDOW, headers={"Authorization": f"Bearer {no_scope}"}).status_code == 403


def test_oversized_headers_are_refused_before_anything_else(api, client):
    response = client.get("/metrics/daily", params=WINDOW,
                          headers={"Authorization": f"Bearer {api.sign(sub='x' * 100_000)}"})
    assert response.status_code == 431
    assert response.json()["error"] == "request_header_fields_too_large"


# --- audit ------------------------------------------------------------------


def test_every_request_is_audited_with_status_and_principal(api, client, access_token, metric_rows):
    bearer = {"Authorization": f"Bearer {access_token}"}
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID}
    secret = CREDENTIALS[CLIENT_ID]
    cases = [
        ("POST", "/auth/token", {"data": {**form, "client_secret": secret}}, 200, CLIENT_ID),
        ("POST", "/auth/token", {"data": {**form, "client_id": "nobody-at-all", "client_secret": "wrong"}}, 401, None),
        ("GET", "/metrics/daily", {"params": {"from": "1999-01-01", "to": "1999-01-02"}, "headers": bearer},
         200, CLIENT_ID),
        ("GET", "/metrics/daily", {"params": {"from": "1999-01-02", "to": "1999-01-01"}, "headers": bearer},
         422, CLIENT_ID),
        ("GET", "/metrics/daily", {"params": {"from": "1999-01-01", "to": "1999-01-02"}}, 401, None),
        ("GET", "/no-such-route", {"params": {"client_secret": secret}}, 404, None),
        ("GET", "/health%00", {}, 404, None),
        ("GET", "/metrics/merchants", {"params": {**WINDOW, "merchant_id": "a\x00b"}, "headers": bearer}, 422, None),
    ]
    seen = []
    for method, path, kwargs, expected_status, expected_principal in cases:
        request_id = _request_id()
        headers = {**kwargs.pop("headers", {}), "X-Request-ID": request_id}
        response = client.request(method, path, headers=headers, **kwargs)
        assert response.status_code == expected_status, (path, response.text)
        assert response.headers["x-request-id"] == request_id
        seen.append((request_id, method, path.replace("%00", "\\x00"), expected_status, expected_principal, response))

    rows = api.audit_rows([s[0] for s in seen])
    for request_id, method, path, expected_status, expected_principal, response in seen:
        audit = rows[request_id]
        assert (audit["method"], audit["path"], audit["status_code"], audit["principal"]) == (
            method, path, expected_status, expected_principal)
        assert audit["client_ip"] == "127.0.0.1" and audit["duration_ms"] >= 0
    granted_metrics = rows[seen[2][0]]
    assert granted_metrics["query"] == "from=1999-01-01&to=1999-01-02"
    assert json.loads(granted_metrics["detail"])["rows"] == 2
    assert json.loads(rows[seen[1][0]]["detail"])["client_id"] == "nobody-at-all"
    assert "REDACTED" in rows[seen[5][0]]["query"]
    assert "%00" in rows[seen[7][0]]["query"]

    issued_token = seen[0][5].json()["access_token"]
    with psycopg.connect(api.env["FLUXO_DATABASE_URL"]) as conn:
        leaked = conn.execute(
            "SELECT count(*) FROM audit.api_access WHERE concat_ws(' ', principal, query, detail) LIKE ANY (%s)",
            ([f"%{secret}%", f"%{issued_token}%", f"%{access_token}%"],),
        ).fetchone()[0]
    assert leaked == 0

    # One JSON log line per request, with its request id, without secrets.
    lines = api.log_lines()
    access_lines = [json.loads(line) for line in lines if line.startswith("{") and '"api access"' in line]
    logged_ids = {entry["request_id"] for entry in access_lines}
    assert {request_id for request_id, *_ in seen} <= logged_ids
    text = "\n".join(lines)
    assert secret not in text and issued_token not in text and access_token not in text



def test_a_card_number_in_a_path_or_query_is_masked_in_the_audit_and_the_log(api, client):
    """Someone pastes a card number as a transaction id or a filter: the request is answered as
    usual, but the audit table and the access log keep only the masked number."""
    sent = [(_request_id(), "/transactions/4111111111111111", {}),
            (_request_id(), "/metrics/merchants", {**WINDOW, "merchant_id": "4111 1111 1111 1111"}),
            (_request_id(), "/metrics/merchants", {**WINDOW, "merchant_id": "5555-5555-5555-4444"})]
    for request_id, path, params in sent:
        assert client.get(path, params=params, headers={"X-Request-ID": request_id}).status_code == 401
    quoted = _request_id()  # a 404 whose description quotes the id it was asked for
    response = client.get("/fraud/alerts/6011000990139424",
                          headers={"X-Request-ID": quoted, "Authorization": f"Bearer {api.sign(scope='fraud:read')}"})
    assert response.status_code == 404, response.text
    rows = api.audit_rows([request_id for request_id, *_ in sent] + [quoted])
    first, spaced, dashed = (rows[request_id] for request_id, *_ in sent)
    assert json.loads(rows[quoted]["detail"])["reason"] == "no fraud alert for transaction '<pan ****9424>'"
    assert first["path"] == "/transactions/<pan ****1111>"
    assert spaced["query"] == "from=1999-02-01&to=1999-02-02&merchant_id=<pan+****1111>"
    assert dashed["query"] == "from=1999-02-01&to=1999-02-02&merchant_id=<pan+****4444>"
    text = json.dumps(list(rows.values()), default=str) + "\n".join(api.log_lines())
    assert not any(pan in text for pan in ("4111111111111111", "4111+1111", "4111%201111", "5555-5555",
                                           "6011000990139424"))


# --- health -----------------------------------------------------------------


def test_health_probes_answer_and_are_not_audited(api, client):
    request_id = _request_id()
    assert client.get("/healthz").json() == {"status": "ok", "version": fluxo.__version__}
    response = client.get("/readyz", headers={"X-Request-ID": request_id})
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": fluxo.__version__, "database": "ok"}
    assert client.get("/health").json() == response.json()
    assert api.audit_rows([request_id], timeout=1.0) == {}


def test_prometheus_metrics_count_requests_and_show_the_pool_and_audit_queue(client, access_token, metric_rows):
    client.get("/metrics/daily", params={"from": "1999-01-01", "to": "1999-01-02"},
               headers={"Authorization": f"Bearer {access_token}"})
    text = client.get("/ops/metrics").text
    assert re.search(r'fluxo_api_requests_total\{method="GET",route="/metrics/daily",status="200"\} [1-9]', text)
    assert "fluxo_api_request_duration_seconds_bucket" in text
    for gauge in ("fluxo_api_pool_connections", "fluxo_api_pool_max_connections", "fluxo_api_audit_queue_depth"):
        assert re.search(rf"^{gauge} \d", text, re.M), gauge


@pytest.fixture(scope="module")
def api_without_warehouse(stack_env):
    # Nothing listens on this port: the warehouse is down for this instance.
    env = {**stack_env, "FLUXO_DATABASE_URL": f"postgresql://fluxo:unused@127.0.0.1:{free_port()}/warehouse"}
    home = TEST_HOME / f"api-down-{uuid.uuid4().hex[:6]}"
    service = ApiService(env, home, FLUXO_API_AUDIT_SPILL_DIR=str(home / "spill"),
                         FLUXO_API_POOL_TIMEOUT_SECONDS="1").start(ready_path="/healthz")
    yield service
    service.stop()


def test_without_the_warehouse_answers_are_503_and_audit_rows_are_kept(api_without_warehouse):
    service = api_without_warehouse
    with httpx.Client(base_url=service.base_url, timeout=30) as down:
        assert down.get("/healthz").status_code == 200
        ready = down.get("/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"]
        assert ready.json() == {"status": "unavailable", "version": fluxo.__version__, "database": "unreachable"}
        request_id = _request_id()
        token = down.post("/auth/token", headers={"X-Request-ID": request_id}, data={
            "grant_type": "client_credentials", "client_id": service.client_id, "client_secret": service.client_secret})
        assert token.status_code == 503 and token.json()["error"] == "temporarily_unavailable"
        assert token.headers["retry-after"]
    service.stop()  # flush on shutdown: the rows the warehouse would not take are spilled, not lost
    spilled = [json.loads(line) for path in (service.home / "spill").glob("*.jsonl")
               for line in path.read_text().splitlines()]
    assert request_id in {row["request_id"] for row in spilled}
    failures = [json.loads(line) for line in service.log_lines() if line.startswith("{") and "audit insert failed" in line]
    assert failures and all(entry["level"] == "ERROR" for entry in failures)


# --- packaging --------------------------------------------------------------


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[re.sub(r"\[.*\]", "", name).strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_api_requirements_are_exact_pins_of_the_platform_constraints():
    api_pins = _pins(API_DIR / "requirements.txt")
    locked = _pins(REPO_ROOT / "constraints.txt")
    assert {"fastapi", "uvicorn", "uvloop", "httptools", "pyjwt", "cryptography", "pydantic-settings", "psycopg",
            "psycopg-pool", "argon2-cffi", "prometheus-client", "python-multipart"} <= set(api_pins)
    assert {name: locked.get(name) for name in api_pins} == api_pins


def test_the_image_layout_from_the_dockerfile_is_enough_to_import_the_app(tmp_path):
    """Rebuild the image's /srv from the Dockerfile's COPY lines and import the app from there only."""
    dockerfile = (API_DIR / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.13-slim", dockerfile, re.M)
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.M) and "HEALTHCHECK" in dockerfile
    for sources_and_target in re.findall(r"^COPY (.+)$", dockerfile, re.M):
        *sources, raw_target = sources_and_target.split()
        into_directory = raw_target.endswith("/") or len(sources) > 1
        target = Path(raw_target.replace("/srv", str(tmp_path), 1))
        for source in sources:
            origin = REPO_ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                destination = target / origin.name if into_directory else target
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, destination)
    assert {"__init__.py", "contract.py", "history.py", "lake.py"} <= {p.name for p in (tmp_path / "fluxo").iterdir()}
    assert (tmp_path / "app" / "static" / "vendor" / "uplot" / "uPlot.iife.min.js").is_file()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXO_")}
    env.update(FLUXO_API_SIGNING_KEYS_DIR=str(tmp_path / "keys"), FLUXO_API_CLIENT_ID="c", FLUXO_API_CLIENT_SECRET="s",
               FLUXO_DATABASE_URL="postgresql://u:p@127.0.0.1:1/db", PYTHONDONTWRITEBYTECODE="1")
    probe = "import app.main, fluxo; print(fluxo.__file__); print(len(app.main.app.routes))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(str(tmp_path))
