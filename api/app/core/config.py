"""Every setting of the API in one class (environment variables prefixed FLUXO_API_).

No secret has a default. Tokens are RS256, signed by the newest key of a key directory
(`SIGNING_KEYS_DIR`, created on first start); HS256 with `JWT_SECRET` only when
`JWT_ALGORITHM=HS256` is set explicitly, for local use. Clients live in the warehouse
(`auth.clients`); `CLIENT_ID`/`CLIENT_SECRET`, when set, create one development client on
first start if it does not exist yet.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Every scope a client can be given; a resource names the one it needs.
KNOWN_SCOPES = ("metrics:read", "transactions:read", "quality:read", "runs:read", "outliers:read", "fraud:read")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLUXO_API_", extra="ignore")

    # --- tokens this API issues ------------------------------------------------------------
    jwt_algorithm: Literal["RS256", "HS256"] = "RS256"
    # RS256: one PEM private key per file, <kid>.pem; the newest signs, all verify until retired.
    signing_keys_dir: Path | None = None
    # HS256 (local use only): at least as long as the hash (RFC 7518 3.2).
    jwt_secret: SecretStr | None = Field(default=None, min_length=32)
    jwt_issuer: str = "fluxo"
    jwt_audience: str = "fluxo-api"
    token_ttl_seconds: int = Field(default=900, gt=0, le=3600)
    # How often a worker looks for a new signing key (an unknown kid makes it look at once).
    key_reload_seconds: float = Field(default=10.0, gt=0)

    # --- accepted tokens of an external identity provider (Keycloak, Cognito, Auth0, Entra) -------
    external_issuer: str | None = None
    external_audience: str | None = None
    external_jwks_url: str | None = None
    external_algorithms: str = "RS256 ES256"
    # Claim holding the scopes: "scope" (space-delimited string) or "scp" (list or string).
    external_scope_claim: str = "scope"
    # Minimum seconds between two JWKS fetches (an unknown kid asks for one).
    jwks_min_refresh_seconds: float = Field(default=10.0, ge=0)
    jwks_cache_seconds: float = Field(default=3600.0, gt=0)

    # --- caps on what a token may carry --------------------------------------------------------
    max_token_bytes: int = Field(default=8192, gt=0)
    max_token_lifetime_seconds: int = Field(default=86_400, gt=0)
    max_claim_chars: int = Field(default=256, gt=0)
    max_scope_chars: int = Field(default=1024, gt=0)
    max_header_bytes: int = Field(default=16_384, gt=0)

    # --- the development client (created on first start when missing) --------------------------
    client_id: str | None = None
    client_secret: SecretStr | None = None
    # Space-delimited, as OAuth2 writes scopes.
    client_scopes: str = " ".join(KNOWN_SCOPES)

    # --- failed client authentication: lockout and rate limit ----------------------------------
    lockout_threshold: int = Field(default=5, gt=0)
    lockout_window_seconds: int = Field(default=300, gt=0)
    lockout_seconds: int = Field(default=60, gt=0)
    # Token requests per second and burst, per client address and worker.
    token_rate_per_second: float = Field(default=20.0, gt=0)
    token_rate_burst: int = Field(default=40, gt=0)
    # Seconds a verified client secret (HTTP Basic on the OData feed) is remembered.
    basic_auth_cache_seconds: float = Field(default=60.0, ge=0)
    # Seconds a client's enabled/disabled state is remembered by a worker.
    client_state_cache_seconds: float = Field(default=5.0, ge=0)
    # argon2id cost (RFC 9106 / OWASP second choice: 19 MiB, 2 passes); secrets are 256-bit random.
    argon2_time_cost: int = Field(default=2, gt=0)
    argon2_memory_kib: int = Field(default=19_456, gt=0)

    # --- warehouse -------------------------------------------------------------------------
    # The API may get its own role (fluxo_api, migration 0007); otherwise the platform's URL.
    database_url: SecretStr = Field(validation_alias=AliasChoices("FLUXO_API_DATABASE_URL", "FLUXO_DATABASE_URL"))
    db_connect_timeout_seconds: int = Field(default=3, gt=0)
    pool_min_size: int = Field(default=2, ge=0)
    pool_max_size: int = Field(default=10, gt=0)
    # Seconds a request waits for a free connection before it is answered 503.
    pool_timeout_seconds: float = Field(default=5.0, gt=0)
    statement_timeout_ms: int = Field(default=15_000, gt=0)

    # --- lake (curated transactions, Delta outlier history) ------------------------------------
    lake_root: str | None = Field(default=None, validation_alias=AliasChoices("FLUXO_API_LAKE_ROOT", "FLUXO_LAKE_ROOT"))

    # --- audit -----------------------------------------------------------------------------
    audit_queue_size: int = Field(default=10_000, gt=0)
    audit_batch_size: int = Field(default=2_000, gt=0)
    audit_flush_seconds: float = Field(default=0.2, gt=0)
    # Fraction of /healthz, /readyz and /ops/metrics requests written to the audit (0: none).
    audit_probe_sample: float = Field(default=0.0, ge=0, le=1)
    # One JSON log line per request on stderr (the audit table has the same facts).
    access_log: bool = True
    # Where rows the warehouse refused at shutdown are written (JSON lines), never dropped.
    audit_spill_dir: Path | None = None

    # --- responses -------------------------------------------------------------------------
    # Absolute base of every link the API writes (Link, @odata.nextLink); never the Host header.
    # Unset: links are relative (path and query only).
    public_base_url: str | None = None
    # Seconds a metrics answer is reused for the same query (0: no cache).
    cache_ttl_seconds: float = Field(default=2.0, ge=0)
    cache_max_entries: int = Field(default=1024, gt=0)
    # Longest day window, in days, both ends included.
    max_range_days: int = Field(default=366, gt=0)

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql://user:password@host:port/db URL")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _absolute_base(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _signing(self) -> Settings:
        if self.jwt_algorithm == "HS256" and self.jwt_secret is None:
            raise ValueError("FLUXO_API_JWT_ALGORITHM=HS256 needs FLUXO_API_JWT_SECRET (32+ characters)")
        if self.jwt_algorithm == "RS256" and self.signing_keys_dir is None:
            home = os.environ.get("FLUXO_HOME")
            if not home:
                raise ValueError(
                    "set FLUXO_API_SIGNING_KEYS_DIR (RS256 signing keys), or for local use "
                    "FLUXO_API_JWT_ALGORITHM=HS256 with FLUXO_API_JWT_SECRET"
                )
            self.signing_keys_dir = Path(home) / "api" / "signing-keys"
        if bool(self.external_issuer) != bool(self.external_jwks_url):
            raise ValueError("FLUXO_API_EXTERNAL_ISSUER and FLUXO_API_EXTERNAL_JWKS_URL go together")
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size must not exceed pool_max_size")
        return self

    @property
    def bootstrap_scopes(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.client_scopes.split())))

    @property
    def resolved_lake_root(self) -> str:
        """FLUXO_API_LAKE_ROOT, else the platform's FLUXO_LAKE_ROOT, else the local stack's <home>/lake."""
        if self.lake_root:
            return self.lake_root
        return str(Path(os.environ.get("FLUXO_HOME", ".fluxo")).resolve() / "lake")


@lru_cache
def get_settings() -> Settings:
    return Settings()
