"""OAuth2 clients in the warehouse (auth.clients, migration 0007): argon2id secret hashes,
scopes, rotation with a grace period, disabling; and the lockout of failed authentications.

Lockout: each failed authentication of a (client id, address) pair counts in a window of
`lockout_window_seconds`; at `lockout_threshold` failures that pair is locked for
`lockout_seconds` (429 + Retry-After, even with the right secret). The state is in the
warehouse, so every worker and replica shares it. Keying by address as well as client id
means an attacker elsewhere cannot lock a dashboard out.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from psycopg.rows import dict_row

from app.core.config import KNOWN_SCOPES, Settings

CLIENT_ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"


def hasher(settings: Settings) -> PasswordHasher:
    return PasswordHasher(time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib,
                          parallelism=1)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Client:
    client_id: str
    scopes: frozenset[str]
    disabled: bool


class Locked(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"locked for {retry_after} s")
        self.retry_after = retry_after


class AuthFailed(Exception):
    pass


def check_scopes(scopes: list[str] | tuple[str, ...]) -> list[str]:
    unknown = sorted(set(scopes) - set(KNOWN_SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {' '.join(unknown)}; known: {' '.join(KNOWN_SCOPES)}")
    return sorted(set(scopes))


# --- management (CLI and start-up; synchronous) --------------------------------------------------


def create_client(conn: psycopg.Connection, settings: Settings, client_id: str, scopes: list[str],
                  description: str = "", secret: str | None = None, if_missing: bool = False) -> str | None:
    """Store a new client; returns its secret (shown once). `if_missing`: None when it exists."""
    secret = secret or new_secret()
    row = conn.execute(
        "INSERT INTO auth.clients (client_id, secret_hash, scopes, description) VALUES (%s, %s, %s, %s)"
        + (" ON CONFLICT (client_id) DO NOTHING" if if_missing else "") + " RETURNING client_id",
        (client_id, hasher(settings).hash(secret), check_scopes(scopes), description),
    ).fetchone()
    return secret if row else None


def list_clients(conn: psycopg.Connection) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT client_id, scopes, description, created_at, updated_at, disabled_at,"
            " previous_valid_until FROM auth.clients ORDER BY client_id").fetchall()


def _update(conn: psycopg.Connection, client_id: str, assignments: str, params: tuple) -> None:
    found = conn.execute(f"UPDATE auth.clients SET {assignments}, updated_at = now() WHERE client_id = %s"
                         " RETURNING 1", (*params, client_id)).fetchone()
    if not found:
        raise KeyError(f"no client {client_id!r}")


def rotate_secret(conn: psycopg.Connection, settings: Settings, client_id: str, grace_seconds: int = 0) -> str:
    """A new secret; the old one keeps working for `grace_seconds` (0: at once invalid)."""
    secret = new_secret()
    _update(conn, client_id,
            "previous_secret_hash = CASE WHEN %s > 0 THEN secret_hash END,"
            " previous_valid_until = CASE WHEN %s > 0 THEN now() + make_interval(secs => %s) END,"
            " secret_hash = %s",
            (grace_seconds, grace_seconds, grace_seconds, hasher(settings).hash(secret)))
    return secret


def set_disabled(conn: psycopg.Connection, client_id: str, disabled: bool) -> None:
    _update(conn, client_id, "disabled_at = CASE WHEN %s THEN coalesce(disabled_at, now()) END", (disabled,))


def set_scopes(conn: psycopg.Connection, client_id: str, scopes: list[str]) -> None:
    _update(conn, client_id, "scopes = %s", (check_scopes(scopes),))


def bootstrap_client(settings: Settings) -> bool:
    """Create the development client of FLUXO_API_CLIENT_ID/SECRET when it does not exist yet."""
    if not settings.client_id or not settings.client_secret:
        return False
    from app.core.db import connect_sync

    with connect_sync(settings) as conn:
        return create_client(conn, settings, settings.client_id, list(settings.bootstrap_scopes),
                             "development client (FLUXO_API_CLIENT_ID)", settings.client_secret.get_secret_value(),
                             if_missing=True) is not None


# --- request path (async) -----------------------------------------------------------------------


class ClientStore:
    def __init__(self, settings: Settings, pool) -> None:
        self.settings = settings
        self.pool = pool
        self.hasher = hasher(settings)
        # Verifying against this when the client is unknown keeps the timing the same.
        self._dummy_hash = self.hasher.hash(new_secret())
        self._state: dict[str, tuple[float, Client | None]] = {}
        self._basic: dict[str, tuple[float, Client]] = {}
        self._reading: dict[str, asyncio.Future] = {}

    async def client(self, client_id: str) -> Client | None:
        """The client's current state, remembered for `client_state_cache_seconds`. One read per
        client at a time: while it runs, callers within twice that age get the remembered state."""
        ttl = self.settings.client_state_cache_seconds
        hit = self._state.get(client_id)
        age = time.monotonic() - hit[0] if hit else None
        if hit and age < ttl:
            return hit[1]
        running = self._reading.get(client_id)
        if running is None:
            running = self._reading[client_id] = asyncio.ensure_future(self._read_client(client_id))
            running.add_done_callback(lambda _: self._reading.pop(client_id, None))
        if hit and age < 2 * ttl:
            return hit[1]
        return await asyncio.shield(running)

    async def _read_client(self, client_id: str) -> Client | None:
        from app.core.db import connection

        async with connection(self.pool) as conn:
            row = await (await conn.execute(
                "SELECT scopes, disabled_at IS NOT NULL FROM auth.clients WHERE client_id = %s", (client_id,)
            )).fetchone()
        client = Client(client_id, frozenset(row[0]), bool(row[1])) if row else None
        if len(self._state) > 10_000:
            self._state.clear()
        self._state[client_id] = (time.monotonic(), client)
        return client

    async def authenticate(self, client_id: str, secret: str, address: str | None) -> Client:
        """The client if the secret is right and the pair is not locked; else Locked or AuthFailed."""
        from app.core.db import connection

        key = f"{client_id}|{address or '-'}"
        s = self.settings
        async with connection(self.pool) as conn:
            locked = await (await conn.execute(
                "SELECT ceil(extract(epoch FROM locked_until - now()))::int FROM auth.failed_logins"
                " WHERE key = %s AND locked_until > now()", (key,))).fetchone()
            if locked:
                raise Locked(max(1, locked[0]))
            row = await (await conn.execute(
                "SELECT secret_hash, CASE WHEN previous_valid_until > now() THEN previous_secret_hash END,"
                " scopes, disabled_at IS NOT NULL FROM auth.clients WHERE client_id = %s", (client_id,))).fetchone()
        hashes = [h for h in (row[0], row[1]) if h] if row else [self._dummy_hash]
        ok = False
        for stored in hashes:
            ok = await asyncio.to_thread(self._verify, stored, secret) or ok
        if row and ok and not row[3]:
            async with connection(self.pool) as conn:
                await conn.execute("DELETE FROM auth.failed_logins WHERE key = %s", (key,))
            return Client(client_id, frozenset(row[2]), False)
        async with connection(self.pool) as conn, conn.transaction():
            failures = (await (await conn.execute(
                """INSERT INTO auth.failed_logins AS f (key, failures, window_started) VALUES (%s, 1, now())
                   ON CONFLICT (key) DO UPDATE SET
                     failures = CASE WHEN f.window_started < now() - make_interval(secs => %s) THEN 1
                                     ELSE f.failures + 1 END,
                     window_started = CASE WHEN f.window_started < now() - make_interval(secs => %s) THEN now()
                                           ELSE f.window_started END
                   RETURNING failures""", (key, s.lockout_window_seconds, s.lockout_window_seconds))).fetchone())[0]
            if failures >= s.lockout_threshold:
                await conn.execute(
                    "UPDATE auth.failed_logins SET locked_until = now() + make_interval(secs => %s), failures = 0,"
                    " window_started = now() WHERE key = %s", (s.lockout_seconds, key))
        if row and row[3] and ok:
            raise AuthFailed("client is disabled")
        raise AuthFailed("client authentication failed")

    def _verify(self, stored: str, secret: str) -> bool:
        try:
            return self.hasher.verify(stored, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def authenticate_basic(self, client_id: str, secret: str, address: str | None) -> Client:
        """HTTP Basic on every request (the OData feed): a verified pair is remembered briefly."""
        digest = hashlib.sha256(f"{client_id}\x00{secret}".encode()).hexdigest()
        hit = self._basic.get(digest)
        if hit and time.monotonic() - hit[0] < self.settings.basic_auth_cache_seconds:
            return hit[1]
        client = await self.authenticate(client_id, secret, address)
        if len(self._basic) > 10_000:
            self._basic.clear()
        self._basic[digest] = (time.monotonic(), client)
        return client


def describe(row: dict) -> str:
    state = "disabled" if row["disabled_at"] else "enabled"
    grace = ""
    if row.get("previous_valid_until") and row["previous_valid_until"] > datetime.now(row["previous_valid_until"].tzinfo):
        grace = f", previous secret valid until {row['previous_valid_until']:%Y-%m-%d %H:%M:%S%z}"
    return f"{row['client_id']}\t{state}\t{' '.join(row['scopes'])}\t{row['description']}{grace}"
