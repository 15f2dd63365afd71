"""OAuth2 done properly, over real HTTP: clients managed with the CLI (rotate with grace, disable,
scopes), signing-key rotation without downtime, an external identity provider's tokens against a
JWKS served by a test server, and the lockout of failed client authentication with recovery."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.conftest import ApiService

WINDOW = {"from": "1999-01-01", "to": "1999-01-02"}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _get(api: ApiService, token: str, path: str = "/metrics/daily", **params) -> httpx.Response:
    return httpx.get(api.base_url + path, params=params or WINDOW, headers={"Authorization": f"Bearer {token}"},
                     timeout=30)


# --- clients -------------------------------------------------------------------------------


def test_cli_lists_clients_without_their_secrets(api):
    name = _name("listed")
    secret = api.create_client(name, "metrics:read", "runs:read")
    listing = api.cli("clients", "list")
    assert listing.returncode == 0
    line = next(line for line in listing.stdout.splitlines() if line.startswith(name))
    assert "enabled" in line and "metrics:read runs:read" in line and secret not in listing.stdout
    exists = api.cli("clients", "create", name, "--scopes", "metrics:read")
    assert exists.returncode == 1 and "exists already" in exists.stderr
    bad_name = api.cli("clients", "create", "no spaces please", "--scopes", "metrics:read")
    assert bad_name.returncode == 1 and "client id is" in bad_name.stderr
    assert api.cli("clients", "create", _name("x"), "--scopes", "admin").returncode != 0  # unknown scope


def test_a_disabled_client_gets_no_token_and_its_tokens_stop_working(api):
    name = _name("disabled")
    secret = api.create_client(name, "metrics:read")
    token = api.token(name, secret)
    assert _get(api, token).status_code == 200
    assert api.cli("clients", "disable", name).returncode == 0
    refused = _get(api, token)
    assert refused.status_code == 401 and "disabled" in refused.json()["error_description"]
    assert api.token_response(name, secret).status_code == 401
    assert api.cli("clients", "enable", name).returncode == 0
    assert _get(api, api.token(name, secret)).status_code == 200


def test_rotating_a_secret_keeps_the_old_one_for_the_grace_period_only(api):
    name = _name("rotated")
    old = api.create_client(name, "metrics:read")
    done = api.cli("clients", "rotate", name, "--grace", "2")
    assert done.returncode == 0
    new = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)["client_secret"]
    assert new != old
    assert api.token_response(name, new).status_code == 200
    assert api.token_response(name, old).status_code == 200  # within the grace period
    time.sleep(2.5)
    assert api.token_response(name, old).status_code == 401
    assert api.token_response(name, new).status_code == 200


def test_narrowed_scopes_apply_to_tokens_already_issued(api):
    name = _name("scoped")
    secret = api.create_client(name, "metrics:read", "runs:read")
    token = api.token(name, secret)
    assert _get(api, token, "/runs", **WINDOW).status_code == 200
    assert api.cli("clients", "scopes", name, "metrics:read").returncode == 0
    assert _get(api, token, "/runs", **WINDOW).status_code == 403
    assert _get(api, token).status_code == 200


# --- lockout -------------------------------------------------------------------------------


def test_failed_authentication_locks_the_client_then_it_recovers(api):
    name = _name("locked")
    secret = api.create_client(name, "metrics:read")
    threshold = int(api.env["FLUXO_API_LOCKOUT_THRESHOLD"])
    statuses = [api.token_response(name, "wrong").status_code for _ in range(threshold)]
    assert statuses == [401] * threshold
    locked = api.token_response(name, secret)  # even the right secret, while locked
    assert locked.status_code == 429 and locked.json()["error"] == "too_many_requests"
    retry_after = int(locked.headers["retry-after"])
    assert 1 <= retry_after <= int(api.env["FLUXO_API_LOCKOUT_SECONDS"])
    # HTTP Basic on the OData feed counts against the same lock
    basic = base64.b64encode(f"{name}:{secret}".encode()).decode()
    feed = httpx.get(api.base_url + "/odata/DailyMetrics", headers={"Authorization": f"Basic {basic}"})
    assert feed.status_code == 429
    time.sleep(retry_after + 0.5)
    assert api.token_response(name, secret).status_code == 200  # recovered
    assert api.token_response(name, "wrong").status_code == 401  # and counting starts again


def test_token_requests_are_rate_limited_per_address(api_service, stack_env):
    """A server of its own with a tight token bucket: bursts get 429 with Retry-After."""
    home = api_service.home.parent / f"api-rate-{uuid.uuid4().hex[:6]}"
    limited = ApiService(stack_env, home, FLUXO_API_TOKEN_RATE_PER_SECOND="0.2",
                         FLUXO_API_TOKEN_RATE_BURST="3").start(ready_path="/healthz")
    try:
        statuses = [limited.token_response("nobody", "x").status_code for _ in range(6)]
        assert statuses[:3] == [401, 401, 401] and 429 in statuses[3:]
        response = limited.token_response("nobody", "x")
        assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    finally:
        limited.stop()


# --- signing keys ----------------------------------------------------------------------------


def test_key_rotation_without_downtime(api):
    name = _name("rotation")
    secret = api.create_client(name, "metrics:read")
    before = api.token(name, secret)
    old_kid = jwt.get_unverified_header(before)["kid"]
    done = api.cli("keys", "rotate")
    assert done.returncode == 0, done.stderr
    new_kid = done.stdout.split(":")[0]
    assert new_kid > old_kid
    # A token of the new key verifies at once (the unknown kid makes the worker look again) ...
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = api.token(name, secret)
        if jwt.get_unverified_header(after)["kid"] == new_kid:
            break
        time.sleep(0.3)
    else:
        pytest.fail("the new key never signed")
    assert _get(api, after).status_code == 200
    # ... the old key's tokens keep working, and both keys are published
    assert _get(api, before).status_code == 200
    published = {k["kid"] for k in httpx.get(api.base_url + "/.well-known/jwks.json").json()["keys"]}
    assert {old_kid, new_kid} <= published
    listing = api.cli("keys", "list").stdout
    assert f"{new_kid}\tsigning" in listing and f"{old_kid}\tverifying" in listing
    # Retiring the old key ends its tokens; the signing key cannot be retired.
    assert api.cli("keys", "retire", new_kid).returncode != 0
    assert api.cli("keys", "retire", old_kid).returncode == 0
    deadline = time.monotonic() + 5
    while _get(api, before).status_code != 401 and time.monotonic() < deadline:
        time.sleep(0.3)
    refused = _get(api, before)
    assert refused.status_code == 401
    assert old_kid not in {k["kid"] for k in httpx.get(api.base_url + "/.well-known/jwks.json").json()["keys"]}
    assert _get(api, after).status_code == 200


def test_hs256_only_when_asked_for_and_then_no_rs256(api, stack_env):
    """FLUXO_API_JWT_ALGORITHM=HS256 (local use): HS256 tokens with the secret; no JWKS keys."""
    home = api.home.parent / f"api-hs-{uuid.uuid4().hex[:6]}"
    secret = "h" * 48
    local = ApiService(stack_env, home, FLUXO_API_JWT_ALGORITHM="HS256", FLUXO_API_JWT_SECRET=secret).start()
    try:
        token = local.token(*api.new_client("hs", "metrics:read"))
        assert jwt.get_unverified_header(token)["alg"] == "HS256"
        jwt.decode(token, secret, algorithms=["HS256"], audience=local.AUDIENCE)
        assert _get(local, token).status_code == 200
        assert httpx.get(local.base_url + "/.well-known/jwks.json").json() == {"keys": []}
        assert _get(local, api.sign()).status_code == 401  # an RS256 token means nothing here
        assert _get(api, token).status_code == 401  # nor an HS256 token to the RS256 server
    finally:
        local.stop()


# --- external identity provider --------------------------------------------------------------


@pytest.fixture
def idp(api):
    """An identity provider's key pair, published at the test JWKS server."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = f"idp-{uuid.uuid4().hex[:6]}"
    api.idp.keys = [{**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig", "alg": "RS256"}]
    time.sleep(float(api.env["FLUXO_API_JWKS_MIN_REFRESH_SECONDS"]) + 0.1)  # the last fetch may be that recent
    return key, kid


def _idp_token(api: ApiService, key, kid: str, alg: str = "RS256", **overrides) -> str:
    now = datetime.now(timezone.utc)
    claims = {"sub": "analyst@example.com", "iss": api.EXTERNAL_ISSUER, "aud": api.AUDIENCE, "iat": now,
              "exp": now + timedelta(minutes=10), "scope": "openid metrics:read"}
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm=alg, headers={"kid": kid})


def test_external_idp_tokens_are_accepted_by_issuer_audience_and_jwks(api, idp):
    key, kid = idp
    response = _get(api, _idp_token(api, key, kid))
    assert response.status_code == 200, response.text
    request_id = f"test-{uuid.uuid4().hex}"
    httpx.get(api.base_url + "/metrics/daily", params=WINDOW, headers={
        "Authorization": f"Bearer {_idp_token(api, key, kid)}", "X-Request-ID": request_id})
    assert api.audit_row(request_id)["principal"] == f"{api.EXTERNAL_ISSUER}#analyst@example.com"
    # scopes as a list in `scp` are not read unless configured; the `scope` claim decides
    assert _get(api, _idp_token(api, key, kid, scope="openid")).status_code == 403


@pytest.mark.parametrize("kind", ["wrong-audience", "expired", "lifetime-over-the-cap", "other-key-same-kid",
                                  "hs256-with-jwk", "unknown-kid", "our-issuer-with-idp-key"])
def test_bad_external_tokens_are_refused(api, idp, kind):
    key, kid = idp
    now = datetime.now(timezone.utc)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = {
        "wrong-audience": lambda: _idp_token(api, key, kid, aud="another-api"),
        "expired": lambda: _idp_token(api, key, kid, iat=now - timedelta(hours=2), exp=now - timedelta(hours=1)),
        "lifetime-over-the-cap": lambda: _idp_token(api, key, kid, exp=now + timedelta(days=400)),
        "other-key-same-kid": lambda: _idp_token(api, other, kid),
        "hs256-with-jwk": lambda: jwt.encode({"sub": "x", "iss": api.EXTERNAL_ISSUER, "aud": api.AUDIENCE,
                                              "iat": now, "exp": now + timedelta(minutes=5)},
                                             "s" * 64, algorithm="HS256", headers={"kid": kid}),
        "unknown-kid": lambda: _idp_token(api, key, "never-published"),
        "our-issuer-with-idp-key": lambda: _idp_token(api, key, kid, iss=api.ISSUER),
    }[kind]()
    assert _get(api, token).status_code == 401


def test_idp_key_rotation_is_picked_up_on_an_unknown_kid_and_fetches_are_rate_limited(api, idp):
    key, kid = idp
    assert _get(api, _idp_token(api, key, kid)).status_code == 200
    new_key = ec.generate_private_key(ec.SECP256R1())
    new_kid = f"idp-ec-{uuid.uuid4().hex[:6]}"
    api.idp.keys = [*api.idp.keys, {**ECAlgorithm.to_jwk(new_key.public_key(), as_dict=True), "kid": new_kid,
                                    "use": "sig", "alg": "ES256"}]
    time.sleep(0.3)  # past FLUXO_API_JWKS_MIN_REFRESH_SECONDS
    assert _get(api, _idp_token(api, new_key, new_kid, alg="ES256")).status_code == 200
    # a flood of unknown kids does not become a flood of JWKS fetches
    async def flood() -> list[int]:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
            answers = await asyncio.gather(*[
                http.get("/metrics/daily", params=WINDOW, headers={
                    "Authorization": f"Bearer {_idp_token(api, key, f'bogus-{i}')}"}) for i in range(50)])
            return [a.status_code for a in answers]

    fetches, started = api.idp.fetches, time.monotonic()
    assert asyncio.run(flood()) == [401] * 50
    elapsed = time.monotonic() - started
    min_refresh = float(api.env["FLUXO_API_JWKS_MIN_REFRESH_SECONDS"])
    assert api.idp.fetches - fetches <= 1 + elapsed / min_refresh and api.idp.fetches - fetches < 25
