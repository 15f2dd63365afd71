"""Request dependencies, as Annotated aliases for the routes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

import psycopg
from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from app.core import db
from app.core.audit import note, set_principal
from app.core.config import Settings
from app.core.security import InvalidToken, Principal, decode_access_token

logger = logging.getLogger("fluxo.api.deps")

METRICS_READ = "metrics:read"


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(settings: SettingsDep) -> Iterator[psycopg.Connection]:
    try:
        conn = db.connect(settings)
    except psycopg.OperationalError as exc:
        logger.error("warehouse connection failed: %s", type(exc).__name__)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail="warehouse unavailable") from exc
    with conn:
        yield conn


SessionDep = Annotated[psycopg.Connection, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /auth/token")


def _refuse(request: Request, status_code: int, reason: str, challenge: str) -> HTTPException:
    note(request, reason=reason)
    return HTTPException(status_code, detail=reason, headers={"WWW-Authenticate": challenge})


def get_current_principal(
    request: Request,
    security_scopes: SecurityScopes,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        # RFC 6750 3.1: no error code when the request carried no token at all.
        raise _refuse(request, status.HTTP_401_UNAUTHORIZED, "bearer token missing", "Bearer")
    try:
        principal = decode_access_token(settings, credentials.credentials)
    except InvalidToken as exc:
        raise _refuse(
            request,
            status.HTTP_401_UNAUTHORIZED,
            str(exc),
            f'Bearer error="invalid_token", error_description="{exc}"',
        ) from None
    set_principal(request, principal.subject)
    missing = sorted(set(security_scopes.scopes) - principal.scopes)
    if missing:
        raise _refuse(
            request,
            status.HTTP_403_FORBIDDEN,
            f"token lacks scope {' '.join(missing)}",
            f'Bearer error="insufficient_scope", scope="{security_scopes.scope_str}"',
        )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_current_principal)]
MetricsReader = Annotated[Principal, Security(get_current_principal, scopes=[METRICS_READ])]
