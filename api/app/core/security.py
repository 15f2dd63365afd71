"""OAuth2 client authentication and the HS256 access tokens the API issues and accepts."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import jwt

from app.core.config import Settings

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "scope", "iat", "exp", "iss", "aud", "jti")


@dataclass(frozen=True)
class Principal:
    """Who a valid access token speaks for."""

    subject: str
    scopes: frozenset[str]
    token_id: str


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


class InvalidToken(Exception):
    """A bearer token that must be refused; the message is safe to show the caller."""


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def authenticate_client(settings: Settings, client_id: str, client_secret: str) -> bool:
    # Both comparisons always run so timing does not tell which half was wrong.
    id_ok = _same(client_id, settings.client_id)
    secret_ok = _same(client_secret, settings.client_secret.get_secret_value())
    return id_ok & secret_ok


def create_access_token(settings: Settings, subject: str, scopes: frozenset[str]) -> IssuedToken:
    now = datetime.now(timezone.utc)
    scope = " ".join(sorted(scopes))
    claims = {
        "sub": subject,
        "scope": scope,
        "iat": now,
        "exp": now + timedelta(seconds=settings.token_ttl_seconds),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=ALGORITHM)
    return IssuedToken(access_token=token, expires_in=settings.token_ttl_seconds, scope=scope)


def decode_access_token(settings: Settings, token: str) -> Principal:
    try:
        # A fixed algorithm list: `alg: none` and algorithm-confusion tokens are refused here.
        claims = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": list(REQUIRED_CLAIMS)},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise InvalidToken("token is not valid yet") from exc
    except jwt.InvalidAudienceError as exc:
        raise InvalidToken("token audience is not this API") from exc
    except jwt.InvalidIssuerError as exc:
        raise InvalidToken("token issuer is not trusted") from exc
    except jwt.InvalidSignatureError as exc:
        raise InvalidToken("token signature does not verify") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise InvalidToken(f"token algorithm is not {ALGORITHM}") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"token lacks the {exc.claim!r} claim") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken("token is malformed") from exc
    if not isinstance(claims["sub"], str) or not isinstance(claims["scope"], str):
        raise InvalidToken("token claims have the wrong types")
    return Principal(subject=claims["sub"], scopes=frozenset(claims["scope"].split()), token_id=str(claims["jti"]))
