"""Request dependencies, as Annotated aliases for the routes."""

from __future__ import annotations

import binascii
from base64 import b64decode
from typing import Annotated
from urllib.parse import unquote_plus

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from app.core import observability as obs
from app.core.audit import note, set_principal
from app.core.clients import AuthFailed, ClientStore, Locked
from app.core.config import Settings
from app.core.errors import ApiError
from app.core.security import InvalidToken, Principal, Tokens


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /auth/token")


def _refuse(request: Request, status_code: int, reason: str, challenge: str, error: str) -> ApiError:
    note(request, reason=reason)
    obs.AUTH_FAILURES.labels(error).inc()
    return ApiError(status_code, reason, error, headers={"WWW-Authenticate": challenge})


def basic_credentials(authorization: str | None) -> tuple[str, str] | None | bool:
    """(client_id, client_secret) from HTTP Basic; None when absent; False when malformed."""
    if not authorization:
        return None
    scheme, _, param = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = b64decode(param.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    client_id, separator, client_secret = decoded.partition(":")
    if not separator or "\x00" in decoded:
        return False
    # RFC 6749 2.3.1: both halves are form-urlencoded before base64.
    return unquote_plus(client_id), unquote_plus(client_secret)


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def bearer_principal(state, token: str) -> Principal:
    """The principal of a bearer token, checked against its client's current state."""
    tokens: Tokens = state.tokens
    principal = await tokens.verify(token)
    if principal.client_id is not None:
        client = await state.clients.client(principal.client_id)
        if client is None or client.disabled:
            raise InvalidToken("client is disabled or unknown")
        # A client whose scopes were narrowed loses them at once, not when its tokens expire.
        principal = Principal(**{**principal.__dict__, "scopes": principal.scopes & client.scopes})
    return principal


def principal_name(state, principal: Principal) -> str:
    """What the audit calls the caller: the client id, or issuer#subject for an external token."""
    if principal.issuer in ("basic", state.settings.jwt_issuer):
        return principal.subject
    return f"{principal.issuer}#{principal.subject}"


async def _basic_principal(request: Request, pair: tuple[str, str] | bool) -> Principal:
    """HTTP Basic with client credentials, accepted where a tool cannot fetch a token (OData feeds)."""
    if pair is False:
        raise _refuse(request, 401, "malformed Basic credentials", 'Basic realm="fluxo"', "invalid_client")
    client_id, secret = pair
    note(request, client_id=client_id[:128])
    limiter = request.app.state.token_limiter
    wait = limiter.retry_after(client_address(request) or "-")
    if wait:
        raise ApiError(429, "too many authentication attempts", "too_many_requests", headers={"Retry-After": str(wait)})
    store: ClientStore = request.app.state.clients
    try:
        client = await store.authenticate_basic(client_id, secret, client_address(request))
    except Locked as exc:
        raise ApiError(429, "too many failed authentications; locked", "too_many_requests",
                       headers={"Retry-After": str(exc.retry_after)}) from None
    except AuthFailed as exc:
        raise _refuse(request, 401, str(exc), 'Basic realm="fluxo"', "invalid_client") from None
    return Principal(subject=client.client_id, scopes=client.scopes, token_id=None, issuer="basic",
                     expires_at=0, client_id=client.client_id)


async def _principal(request: Request, security_scopes: SecurityScopes,
                     credentials: HTTPAuthorizationCredentials | None, allow_basic: bool) -> Principal:
    authorization = request.headers.get("Authorization")
    if allow_basic and authorization and authorization[:6].lower() == "basic ":
        principal = await _basic_principal(request, basic_credentials(authorization))
    elif credentials is None:
        # RFC 6750 3.1: no error code when the request carried no token at all.
        raise _refuse(request, 401, "bearer token missing", "Bearer", "invalid_token")
    else:
        try:
            principal = await bearer_principal(request.app.state, credentials.credentials)
        except InvalidToken as exc:
            raise _refuse(request, 401, str(exc), f'Bearer error="invalid_token", error_description="{exc}"',
                          "invalid_token") from None
    set_principal(request, principal_name(request.app.state, principal))
    missing = sorted(set(security_scopes.scopes) - principal.scopes)
    if missing:
        raise _refuse(request, 403, f"token lacks scope {' '.join(missing)}",
                      f'Bearer error="insufficient_scope", scope="{security_scopes.scope_str}"', "insufficient_scope")
    return principal


async def get_current_principal(
    request: Request, security_scopes: SecurityScopes,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return await _principal(request, security_scopes, credentials, allow_basic=False)


async def get_feed_principal(
    request: Request, security_scopes: SecurityScopes,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Bearer token, or HTTP Basic client credentials (Power BI's OData.Feed 'Basic' credential)."""
    return await _principal(request, security_scopes, credentials, allow_basic=True)


def reader(scope: str):
    """The dependency of a route that needs `scope`."""
    return Annotated[Principal, Security(get_current_principal, scopes=[scope])]


def feed_reader(scope: str):
    return Annotated[Principal, Security(get_feed_principal, scopes=[scope])]
