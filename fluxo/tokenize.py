"""Card tokenisation shared by the generator (ground truth) and the standardize stage.

A raw card number (PAN) must never reach curated data: it is replaced by
`"tok_" + sha256(salt + pan)` (hex, first 32 chars), keeping only its last four
digits. Both sides import this module so the rule exists once.
"""

from __future__ import annotations

import hashlib
import os
import re

TOKEN_PREFIX = "tok_"
# 13-19 digits: the ISO/IEC 7812 PAN lengths.
PAN_PATTERN = r"^[0-9]{13,19}$"
DEFAULT_TOKEN_SALT = "dev-only-salt"  # development only; set FLUXO_TOKEN_SALT elsewhere

# A card number inside free text (any 13-19 digit run in a quarantined raw record or API
# body, wherever it is quarantined): kept as `<pan ****1234>`.
PAN_IN_TEXT = r"(?<![0-9])[0-9]{9,15}([0-9]{4})(?![0-9])"
PAN_MASK = "<pan ****{last4}>"

_PAN_RE = re.compile(PAN_PATTERN)
_PAN_IN_TEXT_RE = re.compile(PAN_IN_TEXT)


def token_salt() -> str:
    """The salt in force: FLUXO_TOKEN_SALT from the environment (a secret, so never a job
    argument: the Airflow operator passes it to local runs; on AWS it is the job's
    environment), else the development default."""
    return os.environ.get("FLUXO_TOKEN_SALT") or DEFAULT_TOKEN_SALT


def is_raw_pan(value: str | None) -> bool:
    return value is not None and bool(_PAN_RE.match(value))


def card_token(pan: str, salt: str | None = None) -> str:
    """The canonical token of a raw PAN."""
    salt = token_salt() if salt is None else salt
    return TOKEN_PREFIX + hashlib.sha256((salt + pan).encode()).hexdigest()[:32]


def mask_pans(text: str) -> str:
    """`text` with every card number masked to its last four digits."""
    return _PAN_IN_TEXT_RE.sub(PAN_MASK.format(last4=r"\1"), text)
