"""OAuth2 client-credentials token endpoint (RFC 6749 section 4.4) and the public signing keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import JSONResponse

from app.api.deps import basic_credentials, client_address
from app.core import observability as obs
from app.core.audit import note, set_principal
from app.core.clients import AuthFailed, ClientStore, Locked
from app.core.errors import ErrorBody, error_response
from app.models import Token

router = APIRouter(tags=["auth"])

# RFC 6749 5.1: token responses must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
FORM_FIELD = Annotated[str | None, Form(max_length=1024)]


def _oauth_error(request: Request, status_code: int, error: str, description: str,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    note(request, reason=error)
    if status_code in (401, 429):
        obs.AUTH_FAILURES.labels(error).inc()
    return error_response(request, status_code, description, error, {**NO_STORE, **(headers or {})})


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


@router.post(
    "/auth/token",
    response_model=Token,
    summary="Issue an access token (client credentials)",
    responses={
        400: _doc("`unsupported_grant_type`, `invalid_request` or `invalid_scope`"),
        401: _doc("`invalid_client`: unknown client, wrong secret, or disabled client"),
        422: _doc("A form field is too long"),
        429: _doc("Too many attempts, or this client is locked after repeated failures; see `Retry-After`"),
        503: _doc("The warehouse (where clients are kept) does not answer"),
    },
)
async def issue_token(
    request: Request,
    grant_type: FORM_FIELD = None,
    client_id: FORM_FIELD = None,
    client_secret: FORM_FIELD = None,
    scope: FORM_FIELD = None,
) -> JSONResponse:
    wait = request.app.state.token_limiter.retry_after(client_address(request) or "-")
    if wait:
        return _oauth_error(request, 429, "too_many_requests", "too many token requests",
                            {"Retry-After": str(wait)})
    basic = basic_credentials(request.headers.get("Authorization"))
    basic_challenge = {"WWW-Authenticate": 'Basic realm="fluxo"'}
    if basic is False:
        return _oauth_error(request, 401, "invalid_client", "malformed Basic credentials", basic_challenge)
    if grant_type != "client_credentials":
        return _oauth_error(request, 400, "unsupported_grant_type" if grant_type else "invalid_request",
                            "grant_type must be client_credentials")
    if basic and (client_secret is not None or (client_id is not None and client_id != basic[0])):
        return _oauth_error(request, 400, "invalid_request", "use one client authentication method, not two")
    claimed_id, secret = basic if basic else (client_id, client_secret)
    if not claimed_id or secret is None:
        return _oauth_error(request, 401, "invalid_client", "client_id and client_secret are required")
    # The claimed id is not a secret and tells the auditor who tried.
    note(request, client_id=claimed_id[:128])
    store: ClientStore = request.app.state.clients
    try:
        client = await store.authenticate(claimed_id, secret, client_address(request))
    except Locked as exc:
        return _oauth_error(request, 429, "too_many_requests",
                            "too many failed authentications for this client; try again later",
                            {"Retry-After": str(exc.retry_after)})
    except AuthFailed as exc:
        return _oauth_error(request, 401, "invalid_client", str(exc), basic_challenge if basic else None)
    granted = client.scopes
    if scope and scope.strip():
        requested = frozenset(scope.split())
        if not requested <= granted:
            unknown = " ".join(sorted(requested - granted))
            return _oauth_error(request, 400, "invalid_scope", f"scope not allowed for this client: {unknown}")
        granted = requested
    set_principal(request, claimed_id)
    issued = request.app.state.tokens.issue(claimed_id, granted)
    note(request, scope=issued.scope)
    body = Token(access_token=issued.access_token, expires_in=issued.expires_in, scope=issued.scope)
    return JSONResponse(body.model_dump(), status_code=status.HTTP_200_OK, headers=NO_STORE)


@router.get("/.well-known/jwks.json", summary="Public keys that verify this API's tokens (RFC 7517)")
async def jwks(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.tokens.jwks(), headers={"Cache-Control": "public, max-age=300"})
