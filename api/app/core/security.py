"""Access tokens: the API's own (RS256 with `kid`, or HS256 for local use) and an external IdP's.

Signing keys (RS256) are PEM files `<kid>.pem` in `signing_keys_dir`; kids sort by creation
time and the newest key signs. Every key in the directory verifies and is published at
`/.well-known/jwks.json`, so rotation has no downtime: add a key (`python -m app.cli keys
rotate`), every worker picks it up within `key_reload_seconds` (at once when it meets its
kid), and tokens signed by the old key keep verifying until `keys retire` moves that file
to `retired/`. The first worker to start with an empty directory creates the first key.

Tokens of an external identity provider are accepted by issuer and audience, verified with
the provider's JWKS (cached; fetched again on an unknown `kid`, at most once per
`jwks_min_refresh_seconds`).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from app.core.config import Settings

logger = logging.getLogger("fluxo.api.security")

REQUIRED_CLAIMS = ("sub", "iat", "exp", "iss", "aud")


@dataclass(frozen=True)
class Principal:
    """Who a valid access token speaks for."""

    subject: str
    scopes: frozenset[str]
    token_id: str | None
    issuer: str
    expires_at: float
    # The OAuth2 client of a token this API issued (None for an external IdP's token).
    client_id: str | None = None


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


class InvalidToken(Exception):
    """A bearer token that must be refused; the message is safe to show the caller."""


# --- signing keys ---------------------------------------------------------------------------


def new_kid() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def write_new_key(directory: Path) -> str:
    """Create an RSA-3072 key `<kid>.pem` (mode 600) in `directory`; returns its kid."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    kid = new_kid()
    tmp = directory / f".{kid}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    tmp.rename(directory / f"{kid}.pem")
    return kid


def retire_key(directory: Path, kid: str) -> Path:
    """Move `<kid>.pem` to `retired/`: tokens it signed stop verifying. The newest key cannot go."""
    kids = sorted(p.stem for p in directory.glob("*.pem"))
    if kid not in kids:
        raise KeyError(f"no signing key {kid!r} in {directory}")
    if kid == kids[-1]:
        raise ValueError(f"{kid} is the key that signs now; rotate first")
    (directory / "retired").mkdir(exist_ok=True)
    target = directory / "retired" / f"{kid}.pem"
    (directory / f"{kid}.pem").rename(target)
    return target


def ensure_first_key(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # several workers start at once: one creates the key
        if not any(directory.glob("*.pem")):
            kid = write_new_key(directory)
            logger.warning("created the first signing key", extra={"fields": {"kid": kid, "dir": str(directory)}})


class KeyRing:
    """The RS256 keys of `signing_keys_dir`, reloaded every `key_reload_seconds` or on an unknown kid."""

    def __init__(self, settings: Settings) -> None:
        self.directory = Path(settings.signing_keys_dir)
        self.reload_seconds = settings.key_reload_seconds
        self.private: dict[str, Any] = {}
        self.public: dict[str, Any] = {}
        self._loaded = 0.0
        self._forced = 0.0

    def load(self) -> None:
        ensure_first_key(self.directory)
        private, public = {}, {}
        for path in sorted(self.directory.glob("*.pem")):
            key = self.private.get(path.stem)  # parsed once: a listing is all a reload costs
            if key is None:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
                if not isinstance(key, rsa.RSAPrivateKey):
                    raise ValueError(f"{path} is not an RSA private key")
            private[path.stem], public[path.stem] = key, key.public_key()
        self.private, self.public = private, public
        self._loaded = time.monotonic()

    def _fresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if force and now - self._forced >= 1.0:
            self._forced = now
            self.load()
        elif now - self._loaded >= self.reload_seconds:
            self.load()

    @property
    def signing_kid(self) -> str:
        self._fresh()
        return max(self.private)

    def verification_key(self, kid: str):
        self._fresh()
        if kid not in self.public:
            self._fresh(force=True)
        return self.public.get(kid)

    def jwks(self) -> dict[str, Any]:
        self._fresh()
        keys = []
        for kid, key in sorted(self.public.items()):
            jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}


# --- external identity provider --------------------------------------------------------------


class JwksCache:
    """Keys of an external JWKS URL: cached, refreshed on an unknown kid, rate-limited."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.external_jwks_url
        self.min_refresh = settings.jwks_min_refresh_seconds
        self.max_age = settings.jwks_cache_seconds
        self.keys: dict[str, Any] = {}
        self._fetched = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str):
        stale = time.monotonic() - self._fetched > self.max_age
        if kid not in self.keys or stale:
            async with self._lock:
                if (kid not in self.keys or stale) and time.monotonic() - self._fetched >= self.min_refresh:
                    await self._fetch()
        return self.keys.get(kid)

    async def _fetch(self) -> None:
        import httpx

        self._fetched = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as http:
                response = await http.get(self.url)
                response.raise_for_status()
                document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            logger.error("JWKS fetch failed", extra={"fields": {"url": self.url, "error": type(exc).__name__}})
            return
        keys = {}
        for jwk in document.get("keys", []) if isinstance(document, dict) else []:
            if not isinstance(jwk, dict) or "kid" not in jwk or jwk.get("use", "sig") != "sig":
                continue
            try:
                keys[str(jwk["kid"])] = jwt.PyJWK(jwk)
            except jwt.PyJWTError:
                continue
        self.keys = keys


# --- issue and verify ------------------------------------------------------------------------


class Tokens:
    """Issues the API's tokens and verifies every accepted kind; a small cache skips re-verifying."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ring = KeyRing(settings) if settings.jwt_algorithm == "RS256" else None
        if self.ring:
            self.ring.load()
        self.external = JwksCache(settings) if settings.external_jwks_url else None
        # token -> (principal, kid): a verified token is not verified again until it expires or its key goes
        self._verified: OrderedDict[str, tuple[Principal, str | None]] = OrderedDict()

    def _key_still_trusted(self, principal: Principal, kid: str | None) -> bool:
        if principal.issuer == self.settings.jwt_issuer:
            return self.ring is None or self.ring.verification_key(kid) is not None
        return self.external is not None and kid in self.external.keys

    def jwks(self) -> dict[str, Any]:
        return self.ring.jwks() if self.ring else {"keys": []}

    def issue(self, client_id: str, scopes: frozenset[str]) -> IssuedToken:
        s = self.settings
        now = int(time.time())
        scope = " ".join(sorted(scopes))
        claims = {"sub": client_id, "client_id": client_id, "scope": scope, "iat": now, "nbf": now,
                  "exp": now + s.token_ttl_seconds, "iss": s.jwt_issuer, "aud": s.jwt_audience, "jti": uuid.uuid4().hex}
        if self.ring:
            kid = self.ring.signing_kid
            token = jwt.encode(claims, self.ring.private[kid], algorithm="RS256", headers={"kid": kid})
        else:
            token = jwt.encode(claims, s.jwt_secret.get_secret_value(), algorithm="HS256")
        return IssuedToken(access_token=token, expires_in=s.token_ttl_seconds, scope=scope)

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            principal, kid = cached
            if principal.expires_at > time.time() and self._key_still_trusted(principal, kid):
                return principal
            self._verified.pop(token, None)
        principal = await self._verify(token)
        self._verified[token] = (principal, _kid(token))
        if len(self._verified) > 10_000:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> Principal:
        s = self.settings
        if len(token) > s.max_token_bytes:
            raise InvalidToken(f"token exceeds {s.max_token_bytes} bytes")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise InvalidToken("token is malformed") from exc
        issuer = unverified.get("iss")
        if issuer == s.jwt_issuer:
            return self._own(token, header)
        if self.external and issuer == s.external_issuer:
            return await self._external(token, header)
        raise InvalidToken("token issuer is not trusted")

    def _own(self, token: str, header: dict[str, Any]) -> Principal:
        s = self.settings
        if self.ring:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise InvalidToken("token has no key id")
            key = self.ring.verification_key(kid)
            if key is None:
                raise InvalidToken("token key id is unknown")
            algorithms = ["RS256"]
        else:
            key, algorithms = s.jwt_secret.get_secret_value(), ["HS256"]
        claims = _decode(token, key, algorithms, s.jwt_audience, s.jwt_issuer, ("scope", "jti"))
        self._caps(claims, s.token_ttl_seconds)
        if not isinstance(claims["scope"], str):
            raise InvalidToken("token claims have the wrong types")
        return Principal(subject=claims["sub"], scopes=frozenset(claims["scope"].split()), token_id=str(claims["jti"]),
                         issuer=s.jwt_issuer, expires_at=float(claims["exp"]), client_id=claims["sub"])

    async def _external(self, token: str, header: dict[str, Any]) -> Principal:
        s = self.settings
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token has no key id")
        jwk = await self.external.key(kid)
        if jwk is None:
            raise InvalidToken("token key id is unknown")
        algorithms = s.external_algorithms.split()
        if header.get("alg") not in algorithms or (jwk.algorithm_name and jwk.algorithm_name != header.get("alg")):
            raise InvalidToken(f"token algorithm is not one of {' '.join(algorithms)}")
        claims = _decode(token, jwk.key, [header["alg"]], s.external_audience or s.jwt_audience, s.external_issuer, ())
        self._caps(claims, s.max_token_lifetime_seconds)
        raw = claims.get(s.external_scope_claim, "")
        if isinstance(raw, str):
            scopes = raw.split()
        elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            scopes = raw
        else:
            raise InvalidToken("token scope claim has the wrong type")
        if len(" ".join(scopes)) > s.max_scope_chars:
            raise InvalidToken("token scope claim is too long")
        jti = claims.get("jti")
        return Principal(subject=claims["sub"], scopes=frozenset(scopes), token_id=str(jti) if jti else None,
                         issuer=s.external_issuer, expires_at=float(claims["exp"]))

    def _caps(self, claims: dict[str, Any], max_lifetime: int) -> None:
        s = self.settings
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 0 < len(sub) <= s.max_claim_chars:
            raise InvalidToken(f"token subject must be a string of 1-{s.max_claim_chars} characters")
        scope = claims.get("scope")
        if isinstance(scope, str) and len(scope) > s.max_scope_chars:
            raise InvalidToken("token scope claim is too long")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, (int, float)) or not isinstance(exp, (int, float)):
            raise InvalidToken("token times must be numbers")
        if exp - iat > max_lifetime:
            raise InvalidToken(f"token lifetime exceeds {max_lifetime} seconds")


def _kid(token: str) -> str | None:
    kid = jwt.get_unverified_header(token).get("kid")
    return kid if isinstance(kid, str) else None


def _decode(token: str, key, algorithms: list[str], audience: str, issuer: str, extra_required: tuple[str, ...]):
    try:
        # A fixed algorithm list per key: `alg: none` and algorithm-confusion tokens are refused here.
        return jwt.decode(token, key, algorithms=algorithms, audience=audience, issuer=issuer,
                          options={"require": [*REQUIRED_CLAIMS, *extra_required]}, leeway=5)
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
        raise InvalidToken(f"token algorithm is not {' '.join(algorithms)}") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"token lacks the {exc.claim!r} claim") from exc
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:
        raise InvalidToken("token is malformed") from exc
