"""OAuth2 client-credentials token endpoint (RFC 6749 section 4.4)."""

from __future__ import annotations

import binascii
from base64 import b64decode
from typing import Annotated
from urllib.parse import unquote_plus

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import JSONResponse

from app.api.deps import SettingsDep
from app.core.audit import note, set_principal
from app.core.security import authenticate_client, create_access_token
from app.models import OAuthError, Token

router = APIRouter(prefix="/auth", tags=["auth"])

# RFC 6749 5.1: token responses must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _oauth_error(
    request: Request, status_code: int, error: str, description: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    note(request, reason=error)
    body = OAuthError(error=error, error_description=description).model_dump()
    return JSONResponse(body, status_code=status_code, headers={**NO_STORE, **(headers or {})})


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None | bool:
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
    if not separator:
        return False
    # RFC 6749 2.3.1: both halves are form-urlencoded before base64.
    return unquote_plus(client_id), unquote_plus(client_secret)


@router.post(
    "/token",
    response_model=Token,
    summary="Issue an access token (client credentials)",
    responses={400: {"model": OAuthError}, 401: {"model": OAuthError}},
)
def issue_token(
    request: Request,
    settings: SettingsDep,
    grant_type: Annotated[str | None, Form()] = None,
    client_id: Annotated[str | None, Form()] = None,
    client_secret: Annotated[str | None, Form()] = None,
    scope: Annotated[str | None, Form()] = None,
) -> JSONResponse:
    basic = _basic_credentials(request.headers.get("Authorization"))
    basic_challenge = {"WWW-Authenticate": 'Basic realm="fluxo"'}
    if basic is False:
        return _oauth_error(request, 401, "invalid_client", "malformed Basic credentials", basic_challenge)
    if grant_type != "client_credentials":
        return _oauth_error(
            request, 400, "unsupported_grant_type" if grant_type else "invalid_request",
            "grant_type must be client_credentials",
        )
    if basic and (client_secret is not None or (client_id is not None and client_id != basic[0])):
        return _oauth_error(request, 400, "invalid_request", "use one client authentication method, not two")
    claimed_id, secret = basic if basic else (client_id, client_secret)
    if not claimed_id or secret is None:
        return _oauth_error(request, 401, "invalid_client", "client_id and client_secret are required")
    # The claimed id is not a secret and tells the auditor who tried.
    note(request, client_id=claimed_id)
    if not authenticate_client(settings, claimed_id, secret):
        return _oauth_error(
            request, 401, "invalid_client", "client authentication failed", basic_challenge if basic else None
        )
    granted = settings.allowed_scopes
    if scope and scope.strip():
        requested = frozenset(scope.split())
        if not requested <= granted:
            unknown = " ".join(sorted(requested - granted))
            return _oauth_error(request, 400, "invalid_scope", f"scope not allowed for this client: {unknown}")
        granted = requested
    set_principal(request, claimed_id)
    issued = create_access_token(settings, claimed_id, granted)
    note(request, scope=issued.scope)
    body = Token(access_token=issued.access_token, expires_in=issued.expires_in, scope=issued.scope)
    return JSONResponse(body.model_dump(), status_code=status.HTTP_200_OK, headers=NO_STORE)
