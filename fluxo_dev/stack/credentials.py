"""Development-only secrets, generated on first use and kept in `<home>/secrets.json` (mode 600).

Reused across restarts so data written with one password or token salt stays
readable; nothing here is ever committed.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import threading
from collections.abc import Callable
from pathlib import Path

from fluxo_dev.stack.process import write_private

_ALNUM_UPPER = string.ascii_uppercase + string.digits


def _access_key() -> str:
    # Shaped like an AWS access key id: 20 upper-case letters/digits.
    return "FLX" + "".join(secrets.choice(_ALNUM_UPPER) for _ in range(17))


def _token() -> str:
    return secrets.token_urlsafe(32)


def _password() -> str:
    return secrets.token_hex(16)


GENERATORS: dict[str, Callable[[], str]] = {
    "postgres_password": _password,
    "postgres_superuser_password": _password,
    "s3_access_key": _access_key,
    "s3_secret_key": lambda: secrets.token_urlsafe(30),
    "token_salt": _token,
    "api_jwt_secret": _token,
    "api_client_secret": _token,
    "partner_api_token": _token,
    "airflow_admin_password": _password,
    "airflow_jwt_secret": _token,
    "airflow_secret_key": _token,
    # a Fernet key: 32 random bytes, URL-safe base64
    "airflow_fernet_key": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
}


class Credentials:
    def __init__(self, home: Path):
        self.path = home / "secrets.json"
        self._lock = threading.Lock()

    def _load(self) -> dict[str, str]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}

    def get(self, key: str) -> str:
        with self._lock:
            stored = self._load()
            if key not in stored:
                stored[key] = GENERATORS[key]()
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_private(self.path, json.dumps(stored, indent=2, sort_keys=True) + "\n")
            return stored[key]

    def ensure_all(self) -> dict[str, str]:
        return {key: self.get(key) for key in GENERATORS}
