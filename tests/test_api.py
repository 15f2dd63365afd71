"""The query API over real HTTP (uvicorn subprocess) against the real, migrated warehouse of the local stack."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import httpx
import jwt
import psycopg
import pyarrow as pa
import pytest

import fluxo
from fluxo.contract import DAILY_METRICS, METRIC_GRAINS, OUTLIER_SUMMARY
from fluxo_platform.warehouse import replace_days

REPO_ROOT = Path(__file__).resolve().parents[1]
API_DIR = REPO_ROOT / "api"

CLIENT_ID = f"bi-dashboards-{uuid.uuid4().hex[:8]}"
CLIENT_SECRET = secrets.token_urlsafe(32)
JWT_SECRET = secrets.token_urlsafe(48)
ISSUER, AUDIENCE = "fluxo", "fluxo-api"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ApiServer:
    base_url: str
    process: subprocess.Popen
    log_path: Path

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


def _start_api(database_url: str, log_path: Path) -> ApiServer:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXO_")}
    env.update(
        FLUXO_API_JWT_SECRET=JWT_SECRET,
        FLUXO_API_CLIENT_ID=CLIENT_ID,
        FLUXO_API_CLIENT_SECRET=CLIENT_SECRET,
        FLUXO_DATABASE_URL=database_url,
    )
    command = [
        sys.executable, "-m", "uvicorn", "app.main:app", "--app-dir", str(API_DIR),
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
    ]
    log = log_path.open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = ApiServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("API server exited:\n" + "\n".join(server.log_lines()))
        try:
            httpx.get(f"{server.base_url}/health", timeout=5)
            return server
        except httpx.TransportError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError("API server did not answer /health in 60 s:\n" + "\n".join(server.log_lines()))


def _stop(server: ApiServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="module")
def audited_api(warehouse_url, tmp_path_factory):
    """An instance of our own (not conftest's shared `api_server`): own client, own log to inspect."""
    server = _start_api(warehouse_url, tmp_path_factory.mktemp("api") / "api.log")
    yield server
    _stop(server)


@pytest.fixture(scope="module")
def api_without_warehouse(tmp_path_factory):
    # Nothing listens on this port: the warehouse is down for this instance.
    server = _start_api(f"postgresql://fluxo:unused@127.0.0.1:{_free_port()}/warehouse",
                        tmp_path_factory.mktemp("api-down") / "api.log")
    yield server
    _stop(server)


@pytest.fixture(scope="module")
def client(audited_api):
    with httpx.Client(base_url=audited_api.base_url, timeout=30) as http:
        yield http


def _request_id() -> str:
    return f"test-{uuid.uuid4().hex}"


def _token(client: httpx.Client, **form: str) -> httpx.Response:
    body = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **form}
    return client.post("/auth/token", data=body, headers={"X-Request-ID": _request_id()})


@pytest.fixture(scope="module")
def access_token(client) -> str:
    response = _token(client)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def _claims(**overrides) -> dict:
    now = datetime.now(timezone.utc)
    claims = {"sub": CLIENT_ID, "scope": "metrics:read", "iat": now, "exp": now + timedelta(minutes=5),
              "iss": ISSUER, "aud": AUDIENCE, "jti": uuid.uuid4().hex}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, default=str).encode()).rstrip(b"=").decode()


def _audit_row(warehouse_url: str, request_id: str, timeout: float = 10.0) -> dict:
    """The audit row of one request; written just after the response is sent, so poll briefly."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT principal, method, path, query, status_code, client_ip, duration_ms, detail"
                " FROM audit.api_access WHERE detail::jsonb ->> 'request_id' = %s",
                (request_id,),
            ).fetchone()
            if row or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert row is not None, f"no audit row for request {request_id}"
    keys = ("principal", "method", "path", "query", "status_code", "client_ip", "duration_ms", "detail")
    return dict(zip(keys, row))


# --- tokens -----------------------------------------------------------------


def test_token_is_issued_for_the_configured_client(client):
    response = _token(client)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900 and body["scope"] == "metrics:read"
    assert response.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["access_token"], JWT_SECRET, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
    assert claims["sub"] == CLIENT_ID and claims["scope"] == "metrics:read"
    assert claims["exp"] - claims["iat"] == 900 and claims["jti"]
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"


def test_token_accepts_http_basic_client_authentication(client):
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    response = client.post("/auth/token", data={"grant_type": "client_credentials", "scope": "metrics:read"},
                           headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "metrics:read"


@pytest.mark.parametrize(
    ("client_id", "client_secret"),
    [(CLIENT_ID, "not-the-secret"), ("someone-else", CLIENT_SECRET), (CLIENT_ID, "")],
    ids=["wrong-secret", "unknown-client", "empty-secret"],
)
def test_token_is_refused_for_a_wrong_client(client, client_id, client_secret):
    response = _token(client, client_id=client_id, client_secret=client_secret)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "access_token" not in response.json()


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
        "distinct_merchants": 3, "reporting_currency": "BRL",
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


def test_daily_metrics_of_an_empty_window_is_an_empty_list(client, access_token, metric_rows):
    response = client.get("/metrics/daily", params={"from": "1998-01-01", "to": "1998-01-31"},
                          headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 200 and response.json() == []


BAD_TOKENS = {
    "expired": lambda: jwt.encode(_claims(iat=datetime.now(timezone.utc) - timedelta(hours=1),
                                          exp=datetime.now(timezone.utc) - timedelta(minutes=1)), JWT_SECRET),
    "wrong-signature": lambda: jwt.encode(_claims(), secrets.token_urlsafe(48)),
    "alg-none": lambda: f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}.",
    "alg-hs512": lambda: jwt.encode(_claims(), JWT_SECRET, algorithm="HS512"),
    "wrong-audience": lambda: jwt.encode(_claims(aud="someone-else"), JWT_SECRET),
    "wrong-issuer": lambda: jwt.encode(_claims(iss="evil"), JWT_SECRET),
    "issued-in-the-future": lambda: jwt.encode(_claims(iat=datetime.now(timezone.utc) + timedelta(hours=1)),
                                               JWT_SECRET),
    "no-expiry": lambda: jwt.encode(_claims(exp=None), JWT_SECRET),
    "garbage": lambda: "not.a.token",
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_are_refused_with_401(client, warehouse_url, kind):
    request_id = _request_id()
    response = client.get("/metrics/daily", params={"from": "1999-01-01", "to": "1999-01-03"},
                          headers={"Authorization": f"Bearer {BAD_TOKENS[kind]()}", "X-Request-ID": request_id})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    audit = _audit_row(warehouse_url, request_id)
    assert audit["status_code"] == 401 and audit["principal"] is None
    assert json.loads(audit["detail"])["reason"] == response.json()["detail"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic Zm9vOmJhcg=="}, {"Authorization": "Bearer"}],
                         ids=["missing", "basic-scheme", "empty-bearer"])
def test_requests_without_a_bearer_token_are_refused_with_401(client, headers):
    response = client.get("/metrics/daily", params={"from": "1999-01-01", "to": "1999-01-03"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_token_without_the_metrics_scope_is_forbidden(client, warehouse_url):
    request_id = _request_id()
    token = jwt.encode(_claims(scope="reports:read"), JWT_SECRET)
    response = client.get("/metrics/daily", params={"from": "1999-01-01", "to": "1999-01-03"},
                          headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id})
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    audit = _audit_row(warehouse_url, request_id)
    assert audit["status_code"] == 403 and audit["principal"] == CLIENT_ID


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "1999-01-05", "to": "1999-01-01"}, "must not be before"),
        ({"from": "1999-01-01", "to": "2000-01-02"}, "at most 366 days"),
        ({"from": "1999-13-01", "to": "1999-12-31"}, "valid date"),
        ({"from": "1999-01-01"}, "Field required"),
    ],
    ids=["reversed", "too-long", "not-a-date", "missing-to"],
)
def test_bad_query_parameters_are_422(client, access_token, params, message):
    response = client.get("/metrics/daily", params=params, headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 422
    assert message in " ".join(error["msg"] for error in response.json()["detail"])


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


def test_pages_follow_the_link_header_to_the_last_row(client, access_token, grain_rows):
    contract, expected = grain_rows["merchant_daily"]
    bearer = {"Authorization": f"Bearer {access_token}"}
    response = client.get("/metrics/merchants", params={**WINDOW, "limit": 4}, headers=bearer)
    pages = [response]
    while "link" in response.headers:
        assert response.headers["link"].endswith('>; rel="next"')
        response = client.get(response.headers["link"][1:-len('>; rel="next"')], headers=bearer)
        pages.append(response)
    assert [len(p.json()) for p in pages] == [4, 4, 4, 2]
    assert [_from_json(contract, item) for p in pages for item in p.json()] == expected


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


@pytest.mark.parametrize(("params", "message"), [
    ({"limit": 0}, "greater than or equal to 1"),
    ({"limit": 10_001}, "less than or equal to 10000"),
    ({"offset": -1}, "greater than or equal to 0"),
    ({"method": "gut_feeling"}, "Input should be"),
    ({"mcc": "54x1"}, "should match pattern"),
], ids=["limit-0", "limit-too-big", "negative-offset", "unknown-method", "bad-mcc"])
def test_bad_paging_and_filters_are_422(client, access_token, params, message):
    response = client.get("/metrics/outliers", params={**WINDOW, **params},
                          headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 422
    assert message in " ".join(error["msg"] for error in response.json()["detail"])


@pytest.mark.parametrize("path", [*GRAIN_PATHS.values(), "/metrics/outliers"])
def test_every_grain_refuses_missing_and_bad_tokens(client, path):
    assert client.get(path, params=WINDOW).status_code == 401
    forged = jwt.encode(_claims(), secrets.token_urlsafe(48))
    assert client.get(path, params=WINDOW, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    no_scope = jwt.encode(_claims(scope="reports:read"), JWT_SECRET)
    assert client.get(path, params=WINDOW, headers={"Authorization": f"Bearer {no_scope}"}).status_code == 403


# --- audit ------------------------------------------------------------------


def test_every_request_is_audited_with_status_and_principal(client, audited_api, warehouse_url, access_token,
                                                           metric_rows):
    bearer = {"Authorization": f"Bearer {access_token}"}
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID}
    cases = [
        ("POST", "/auth/token", {"data": {**form, "client_secret": CLIENT_SECRET}}, 200, CLIENT_ID),
        ("POST", "/auth/token", {"data": {**form, "client_secret": "wrong"}}, 401, None),
        ("GET", "/metrics/daily", {"params": {"from": "1999-01-01", "to": "1999-01-02"}, "headers": bearer},
         200, CLIENT_ID),
        ("GET", "/metrics/daily", {"params": {"from": "1999-01-02", "to": "1999-01-01"}, "headers": bearer},
         422, CLIENT_ID),
        ("GET", "/metrics/daily", {"params": {"from": "1999-01-01", "to": "1999-01-02"}}, 401, None),
        ("GET", "/health", {}, 200, None),
        ("GET", "/no-such-route", {"params": {"client_secret": CLIENT_SECRET}}, 404, None),
    ]
    seen = []
    for method, path, kwargs, expected_status, expected_principal in cases:
        request_id = _request_id()
        headers = {**kwargs.pop("headers", {}), "X-Request-ID": request_id}
        response = client.request(method, path, headers=headers, **kwargs)
        assert response.status_code == expected_status, (path, response.text)
        assert response.headers["x-request-id"] == request_id
        seen.append((request_id, method, path, expected_status, expected_principal, response))

    for request_id, method, path, expected_status, expected_principal, response in seen:
        audit = _audit_row(warehouse_url, request_id)
        assert (audit["method"], audit["path"], audit["status_code"], audit["principal"]) == (
            method, path, expected_status, expected_principal)
        assert audit["client_ip"] == "127.0.0.1" and audit["duration_ms"] >= 0
    granted_metrics = _audit_row(warehouse_url, seen[2][0])
    assert granted_metrics["query"] == "from=1999-01-01&to=1999-01-02"
    assert json.loads(granted_metrics["detail"])["rows"] == 2
    assert json.loads(_audit_row(warehouse_url, seen[1][0])["detail"])["client_id"] == CLIENT_ID
    assert "REDACTED" in _audit_row(warehouse_url, seen[-1][0])["query"]

    issued_token = seen[0][5].json()["access_token"]
    with psycopg.connect(warehouse_url) as conn:
        leaked = conn.execute(
            "SELECT count(*) FROM audit.api_access WHERE concat_ws(' ', principal, query, detail) LIKE ANY (%s)",
            ([f"%{CLIENT_SECRET}%", f"%{issued_token}%", f"%{access_token}%"],),
        ).fetchone()[0]
    assert leaked == 0

    # One JSON log line per request, without secrets.
    lines = audited_api.log_lines()
    access_lines = [json.loads(line) for line in lines if line.startswith("{") and '"api access"' in line]
    logged_ids = {entry["detail"]["request_id"] for entry in access_lines}
    assert {request_id for request_id, *_ in seen} <= logged_ids
    text = "\n".join(lines)
    assert CLIENT_SECRET not in text and issued_token not in text and access_token not in text


# --- health -----------------------------------------------------------------


def test_health_reports_the_warehouse_and_version(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": fluxo.__version__, "database": "ok"}


def test_without_the_warehouse_health_is_503_and_tokens_still_answer(api_without_warehouse):
    with httpx.Client(base_url=api_without_warehouse.base_url, timeout=30) as down:
        health = down.get("/health")
        assert health.status_code == 503
        assert health.json() == {"status": "unavailable", "version": fluxo.__version__, "database": "unreachable"}

        # The audit insert fails, the answer does not.
        request_id = _request_id()
        token = down.post("/auth/token", headers={"X-Request-ID": request_id}, data={
            "grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
        assert token.status_code == 200
        metrics = down.get("/metrics/daily", params={"from": "1999-01-01", "to": "1999-01-02"},
                           headers={"Authorization": f"Bearer {token.json()['access_token']}"})
        assert metrics.status_code == 503 and metrics.json() == {"detail": "warehouse unavailable"}

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        failures = [json.loads(line) for line in api_without_warehouse.log_lines()
                    if line.startswith("{") and "audit insert failed" in line]
        if any(entry.get("request_id") == request_id for entry in failures):
            break
        time.sleep(0.1)
    else:
        pytest.fail("no 'audit insert failed' error logged for the token request")
    assert all(entry["level"] == "ERROR" for entry in failures)


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
    assert {"fastapi", "uvicorn", "pyjwt", "pydantic-settings", "psycopg", "python-multipart"} <= set(api_pins)
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
    assert {"__init__.py", "contract.py", "sources.py"} <= {p.name for p in (tmp_path / "fluxo").iterdir()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXO_")}
    env.update(FLUXO_API_JWT_SECRET=JWT_SECRET, FLUXO_API_CLIENT_ID="c", FLUXO_API_CLIENT_SECRET="s",
               FLUXO_DATABASE_URL="postgresql://u:p@127.0.0.1:1/db", PYTHONDONTWRITEBYTECODE="1")
    probe = "import app.main, fluxo; print(fluxo.__file__); print(len(app.main.app.routes))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(str(tmp_path))
