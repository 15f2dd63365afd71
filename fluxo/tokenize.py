"""Card numbers: tokenisation, and masking wherever a person or a later stage reads text.

A raw card number (PAN) must never reach curated data: it is replaced by
`"tok_" + sha256(salt + pan)` (hex, first 32 chars), keeping only its last four
digits. The generator (ground truth) and standardize import this module so the rule exists once.

Beyond the card field, no PAN may be readable past the raw zone: quarantined records and files,
error messages and logs are masked. A *PAN-shaped sequence* is 13-19 digits, Luhn-valid, either
one unbroken run of digits or groups of at most 6 digits joined by spaces or dashes (one to
three of them: `4111111111111111`, `4111 1111 1111 1111`, `4111-1111-1111-1111`,
`4111 - 1111 - 1111 - 1111`, `3782 822463 10005`); it is
masked as `<pan ****1111>` (its last four digits, which PCI DSS allows to show). Every window of
consecutive groups is tried, so a PAN next to other digits (`12 4111 1111 1111 1111`) is found.
Not PAN-shaped: runs longer than 19 digits, groups longer than 6 inside a grouped form, and a
grouped form touching a letter, digit or `_` at either end — so no UUID ever is
(`abcdef12-1234-5678-9012-3456abcdef12` holds 18 digits in dash-joined groups, but its ends touch
letters); a bare run may touch letters (`CARD4111111111111111`). The rule has two renderings with the same results (a test compares
them): `mask_pans`/`has_pan` in Python for the extractors, and `mask_pans_sql`/`has_pan_sql`,
native Spark SQL expressions (regexp + higher-order functions, no Python UDF), for standardize.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import uuid

TOKEN_PREFIX = "tok_"
# 13-19 digits: the ISO/IEC 7812 PAN lengths.
PAN_MIN_DIGITS, PAN_MAX_DIGITS = 13, 19
PAN_PATTERN = rf"^[0-9]{{{PAN_MIN_DIGITS},{PAN_MAX_DIGITS}}}$"
DEFAULT_TOKEN_SALT = "dev-only-salt"  # development only; set FLUXO_TOKEN_SALT elsewhere

# Inside free text: groups of digits; a grouped PAN joins groups of at most MAX_GROUP digits by a separator.
PAN_MASK = "<pan ****{last4}>"
PAN_SEPARATORS, MAX_SEPARATOR = " -", 3
MAX_GROUP = 6
# A cheap necessary condition for any PAN-shaped sequence (13 digits, separators between).
PAN_HINT = r"[0-9](?:[ -]{0,3}[0-9]){12}"

_PAN_RE = re.compile(PAN_PATTERN)
_DIGITS_RE = re.compile(r"[0-9]+")
_HINT_RE = re.compile(PAN_HINT)


def _is_separator(gap: str) -> bool:
    return 1 <= len(gap) <= MAX_SEPARATOR and not gap.strip(PAN_SEPARATORS)


def _is_word(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char == "_")


def token_salt() -> str:
    """The salt in force: FLUXO_TOKEN_SALT from the environment (a secret, so never a job
    argument: the Airflow operator passes it to local runs; on AWS it is the job's
    environment), else the development default."""
    return os.environ.get("FLUXO_TOKEN_SALT") or DEFAULT_TOKEN_SALT


def is_raw_pan(value: str | None) -> bool:
    return value is not None and bool(_PAN_RE.match(value))


def opaque_id(data: bytes | None = None) -> str:
    """Bytes (a digest; a fresh random id when None) as lowercase base32 for ids the platform
    stores. About one hex digest in 230 (one uuid4 hex in 470) holds a Luhn-valid run of 13-19
    digits, which a PAN scanner such as Macie rightly reports wherever it is kept; base32 has no
    digit but 2-7, so such a run is about a million times rarer."""
    return base64.b32encode(uuid.uuid4().bytes if data is None else data).decode().rstrip("=").lower()


def card_token(pan: str, salt: str | None = None) -> str:
    """The canonical token of a raw PAN."""
    salt = token_salt() if salt is None else salt
    return TOKEN_PREFIX + hashlib.sha256((salt + pan).encode()).hexdigest()[:32]


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        d = int(char)
        if position % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _covered(text: str) -> tuple[list[re.Match], list[bool], list[bool]]:
    """The digit groups of text, whether each is joined to the one before, and whether each lies
    inside a PAN-shaped window."""
    groups = list(_DIGITS_RE.finditer(text)) if _HINT_RE.search(text) else []
    joined = [i > 0 and _is_separator(text[groups[i - 1].end():groups[i].start()]) for i in range(len(groups))]
    covered = [False] * len(groups)
    for i in range(len(groups)):
        digits = ""
        for j in range(i, len(groups)):
            if j > i and not joined[j]:
                break
            digits += groups[j].group()
            if len(digits) > PAN_MAX_DIGITS:
                break
            single_run = j == i
            apart = not _is_word(text[groups[i].start() - 1:groups[i].start()] or " ") and not _is_word(
                text[groups[j].end():groups[j].end() + 1] or " ")
            short_groups = apart and all(len(g.group()) <= MAX_GROUP for g in groups[i:j + 1])
            if len(digits) >= PAN_MIN_DIGITS and (single_run or short_groups) and luhn_valid(digits):
                covered[i:j + 1] = [True] * (j + 1 - i)
    return groups, joined, covered


def has_pan(text: str | None) -> bool:
    """Whether text holds a PAN-shaped sequence."""
    return bool(text) and any(_covered(text)[2])


def mask_pans(text: str) -> str:
    """`text` with every PAN-shaped sequence masked to its last four digits."""
    groups, joined, covered = _covered(text)
    if not any(covered):
        return text
    out, position, digits = [], 0, ""
    for j, group in enumerate(groups):
        if not covered[j]:
            continue
        inside = j > 0 and covered[j - 1] and joined[j]
        if not inside:
            out.append(text[position:group.start()])
            digits = ""
        digits += group.group()
        position = group.end()
        last = j == len(groups) - 1 or not (covered[j + 1] and joined[j + 1])
        if last:
            out.append(PAN_MASK.format(last4=digits[-4:]))
    out.append(text[position:])
    return "".join(out)


def mask_pans_bytes(data: bytes) -> str:
    """Bytes as text (UTF-8, or latin-1 when they are not UTF-8) with every PAN-shaped sequence masked."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return mask_pans(text)


# --- the same rule as Spark SQL expressions -------------------------------------------------
# Spark has no `let`: a value used many times inside a lambda would be computed again each time
# (the windows once per group: cubic on a long text). `_let` binds it once, as the variable of a
# one-element transform.


def _let(value, body):
    from pyspark.sql import functions as F

    return F.element_at(F.transform(F.array(value), body), 1)


def _luhn_sql(digits):
    from pyspark.sql import functions as F

    length = F.length(digits)

    def weighted(p):
        d = F.substring(digits, length - p, 1).try_cast("int")
        return F.when(p % 2 == 1, F.when(d > 4, d * 2 - 9).otherwise(d * 2)).otherwise(d)

    return F.aggregate(F.sequence(F.lit(0), length - 1), F.lit(0), lambda acc, p: acc + weighted(p)) % 10 == 0


def _windows_sql(groups, pieces, joined):
    """The PAN-shaped windows (struct i, k: groups i..i+k-1, 0-based) of bound arrays."""
    from pyspark.sql import functions as F

    n = F.size(groups)

    def window(i, k):
        part = F.slice(groups, i + 1, k)
        before = F.substring(F.element_at(pieces, i + 1), -1, 1)  # the character before the first group
        after = F.substring(F.element_at(pieces, i + k + 1), 1, 1)  # and after the last
        apart = ~before.rlike("[A-Za-z0-9_]") & ~after.rlike("[A-Za-z0-9_]")
        chained = F.forall(F.slice(joined, i + 2, F.greatest(k - 1, F.lit(1))), lambda x: x)
        grouped = (k == 1) | (chained & apart & F.forall(part, lambda g: F.length(g) <= MAX_GROUP))
        ok = _let(F.array_join(part, ""), lambda digits: F.length(digits).between(PAN_MIN_DIGITS, PAN_MAX_DIGITS)
                  & grouped & F.coalesce(_luhn_sql(digits), F.lit(False)))
        return F.struct(i.alias("i"), k.alias("k"), F.coalesce(ok, F.lit(False)).alias("ok"))

    starts = F.sequence(F.lit(0), F.greatest(n - 1, F.lit(0)))
    lengths = lambda i: F.sequence(F.lit(1), F.greatest(F.least(F.lit(PAN_MAX_DIGITS), n - i), F.lit(1)))  # noqa: E731
    return F.filter(F.flatten(F.transform(starts, lambda i: F.transform(lengths(i), lambda k: window(i, k)))),
                    lambda w: w["ok"])


def _with_pan_windows(text, body):
    """body(groups, pieces, joined, windows) over the bound digit groups of text, the gaps around
    them (n + 1) and the windows; null where text cannot hold a PAN (the cheap regexp says so)."""
    from pyspark.sql import functions as F

    def separator(gap):
        return F.length(gap).between(1, MAX_SEPARATOR) & (F.translate(gap, PAN_SEPARATORS, "") == "")

    # (the length first: short identifiers skip the regexp)
    return F.when((F.length(text) >= PAN_MIN_DIGITS) & text.rlike(PAN_HINT), _let(
        F.regexp_extract_all(text, F.lit("([0-9]+)"), F.lit(1)), lambda groups: _let(
            F.split(text, "[0-9]+", -1), lambda pieces: _let(
                F.transform(groups, lambda g, i: (i > 0) & separator(F.element_at(pieces, i + 1))), lambda joined: _let(
                    _windows_sql(groups, pieces, joined), lambda windows: body(groups, pieces, joined, windows))))))


def has_pan_sql(text):
    """Spark column: whether the text column holds a PAN-shaped sequence (same rule as `has_pan`)."""
    from pyspark.sql import functions as F

    return F.coalesce(_with_pan_windows(text, lambda groups, pieces, joined, windows: F.size(windows) > 0),
                      F.lit(False))


def mask_pans_sql(text):
    """Spark column: the text column with every PAN-shaped sequence masked (same rule as `mask_pans`)."""
    from pyspark.sql import functions as F

    before, after = PAN_MASK.split("{last4}")

    def masked(groups, pieces, joined, windows):
        covered = F.transform(groups, lambda g, j: F.exists(windows, lambda w: (w["i"] <= j) & (j < w["i"] + w["k"])))

        def render(covered):
            def at(array, j):  # 0-based, null outside
                return F.try_element_at(array, j + 1)

            def one(g, j):
                cov = at(covered, j)
                inside = cov & (j > 0) & F.coalesce(at(covered, j - 1), F.lit(False)) & at(joined, j)
                last = cov & ~(F.coalesce(at(covered, j + 1), F.lit(False)) & F.coalesce(at(joined, j + 1), F.lit(False)))
                last4 = F.substring(F.array_join(F.slice(groups, F.greatest(j - 2, F.lit(1)), F.least(j + 1, F.lit(4))), ""),
                                    -4, 4)
                gap = F.when(inside, F.lit("")).otherwise(at(pieces, j))
                shown = F.when(~cov, g).when(last, F.concat(F.lit(before), last4, F.lit(after))).otherwise(F.lit(""))
                return F.concat(gap, shown)

            return F.concat(F.array_join(F.transform(groups, one), ""), F.element_at(pieces, -1))

        return F.when(F.size(windows) > 0, _let(covered, render))

    return F.coalesce(_with_pan_windows(text, masked), text)
