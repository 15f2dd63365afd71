"""Every setting of the API in one class (environment variables prefixed FLUXO_API_).

No secret has a default: the local stack generates development values into
FLUXO_API_JWT_SECRET / FLUXO_API_CLIENT_ID / FLUXO_API_CLIENT_SECRET, and a
deployment injects real ones.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLUXO_API_", extra="ignore")

    # HS256 needs a key at least as long as the hash (RFC 7518 3.2).
    jwt_secret: SecretStr = Field(min_length=32)
    jwt_issuer: str = "fluxo"
    jwt_audience: str = "fluxo-api"
    token_ttl_seconds: int = Field(default=900, gt=0)

    # The one configured OAuth2 client (client-credentials grant).
    client_id: str = Field(min_length=1)
    client_secret: SecretStr = Field(min_length=1)
    # Space-delimited, as OAuth2 writes scopes.
    client_scopes: str = "metrics:read"

    # The API may get its own (read-mostly) role; otherwise the platform's warehouse URL.
    database_url: SecretStr = Field(
        validation_alias=AliasChoices("FLUXO_API_DATABASE_URL", "FLUXO_DATABASE_URL")
    )
    db_connect_timeout_seconds: int = Field(default=3, gt=0)

    # Longest /metrics/daily window, in days, both ends included.
    max_range_days: int = Field(default=366, gt=0)

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql://user:password@host:port/db URL")
        return value

    @property
    def allowed_scopes(self) -> frozenset[str]:
        return frozenset(self.client_scopes.split())


@lru_cache
def get_settings() -> Settings:
    return Settings()
