"""Reference data shipped with the library: the closed sets of the contract and the FX sample.

Every file is read through importlib.resources, so the Glue library zip reads them as the
checkout does. `fluxo/reference/README.md` says where each file comes from and how to update it.

* `countries.csv` — ISO 3166-1 alpha-2 codes (the contract's `country` set);
* `currencies.csv` — ISO 4217 codes (the contract's `currency` set);
* `mcc.csv` — merchant category codes as the card networks publish them (ISO 18245): single
  codes and the brand blocks (airlines, car rental, lodging); `mcc_groups.csv` — ISO 18245's ranges;
* `fx_rates.csv` — development sample FX rates, `1 unit of currency = rate_to_brl BRL`;
* `country_travel_minutes.csv`, `country_timezones.csv` — what the fraud rules impossible_travel
  and night_high_risk_mcc read (lines starting with `#` are comments).

Nothing here imports anything but the standard library (the API container reads the contract too).
"""

from __future__ import annotations

import csv
import functools
import io
from decimal import Decimal
from importlib import resources

FX_RATES_FILE = "fx_rates.csv"


def read_text(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def read_csv(name: str) -> list[dict[str, str]]:
    """The rows of a packaged CSV; lines starting with `#` are comments."""
    return list(csv.DictReader(line for line in read_text(name).splitlines() if line and not line.startswith("#")))


def expand_ranges(rows: list[dict[str, str]]) -> tuple[str, ...]:
    """The 4-digit codes of `first`..`last` rows (inclusive), in order."""
    return tuple(f"{n:04d}" for r in rows for n in range(int(r["first"]), int(r["last"]) + 1))


def parse_fx_rates(text: str) -> dict[str, Decimal]:
    """`currency,rate_to_brl` CSV text -> {CODE: rate}."""
    return {r["currency"].strip().upper(): Decimal(r["rate_to_brl"].strip()) for r in csv.DictReader(io.StringIO(text))}


def fx_rates() -> dict[str, Decimal]:
    """The packaged development FX rates."""
    return parse_fx_rates(read_text(FX_RATES_FILE))


@functools.cache
def travel_minutes_table() -> dict[frozenset, float]:
    """{frozenset((country_a, country_b)): the minimum minutes to travel between them}."""
    return {frozenset((r["country_a"], r["country_b"])): float(r["min_minutes"])
            for r in read_csv("country_travel_minutes.csv")}


@functools.cache
def timezone_table() -> dict[str, str]:
    """{country: the IANA time zone of its merchants}."""
    return {r["country"]: r["timezone"] for r in read_csv("country_timezones.csv")}


COUNTRY_CODES: tuple[str, ...] = tuple(r["alpha_2"] for r in read_csv("countries.csv"))
CURRENCY_CODES: tuple[str, ...] = tuple(r["alpha_3"] for r in read_csv("currencies.csv"))
MCC_CODES: tuple[str, ...] = expand_ranges(read_csv("mcc.csv"))
