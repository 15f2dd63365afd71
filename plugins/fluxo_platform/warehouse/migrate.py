"""Versioned migrations: `migrations/NNNN_name.sql`, applied in order, once each.

Applied versions and their checksums are kept in `public.schema_migrations`; an
applied file that was edited afterwards is an error (write a new migration instead).
"""

from __future__ import annotations

import hashlib
from importlib import resources

import psycopg

LOCK_ID = 74_117_001  # advisory lock: concurrent migrators wait for each other


def available() -> list[tuple[str, str]]:
    files = resources.files("fluxo_platform.warehouse") / "migrations"
    found = sorted(p for p in files.iterdir() if p.name.endswith(".sql"))
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in found]


def migrate(url: str) -> list[str]:
    """Apply pending migrations; returns the versions applied now."""
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS public.schema_migrations ("
                " version text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = dict(conn.execute("SELECT version, checksum FROM public.schema_migrations").fetchall())
            for version, sql in available():
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if version in done:
                    if done[version] != checksum:
                        raise RuntimeError(
                            f"migration {version} was edited after it was applied; add a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute(
                        "INSERT INTO public.schema_migrations (version, checksum) VALUES (%s, %s)",
                        (version, checksum),
                    )
                applied_now.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_ID,))
    return applied_now


if __name__ == "__main__":
    from fluxo_platform.settings import get_settings

    versions = migrate(get_settings().database_url)
    print("applied: " + (", ".join(versions) if versions else "nothing (up to date)"))
