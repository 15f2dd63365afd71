"""The canonical world: customers, cards, merchants and each day's transactions
(with the planted fraud and outliers). Everything is sampled with numpy in bulk;
per-row Python only runs over the card dimension (one sha256 per card)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fluxo.contract import CHANNELS, FRAUD_RULES, STATUSES
from fluxo.tokenize import card_token

from . import catalog as cat
from . import fraud_scenarios

# The label of a planted fraud row: the rule of expectations/fraud_rules.json it must fire
# (fraud_scenarios.py plants a positive and a near miss per rule).
FRAUD_PATTERNS = (None, *FRAUD_RULES)
NO_FRAUD = 0
DAY_SECONDS = 86_400
MIN_ROWS_PER_DAY = 200  # room for the planted fraud scenarios (at most 180 rows a day at the least)

MCC_MEDIAN_CENTS = np.array([round(p[2] * 100) for p in cat.MCC_PROFILES], dtype=np.int64)
MCC_SIGMA = np.array([p[3] for p in cat.MCC_PROFILES])
MCC_CHANNEL_CDF = np.cumsum(np.array([p[5] for p in cat.MCC_PROFILES]), axis=1)
MARKET_CURRENCY = np.array([cat.CURRENCIES.index(m[1]) for m in cat.MARKETS], dtype=np.int8)
CHANNEL = {c: i for i, c in enumerate(CHANNELS)}
STATUS = {s: i for i, s in enumerate(STATUSES)}
# Diurnal profile in São Paulo local hours (UTC-3), from night lull to lunch/evening peaks.
LOCAL_HOUR_WEIGHTS = np.array(
    [0.3, 0.2, 0.15, 0.1, 0.1, 0.2, 0.5, 1.0, 1.5, 2.0, 2.2, 2.5, 3.0, 2.8, 2.4, 2.3, 2.4, 2.6, 3.0, 3.0, 2.6, 2.0, 1.4, 0.7]
)
UTC_HOUR_CDF = np.cumsum(np.roll(LOCAL_HOUR_WEIGHTS, 3))  # UTC hour h is local hour h-3


def day_start_epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp())


def pick(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """n draws from the categorical distribution given by an (unnormalised) cdf."""
    return np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")


def fixed_width_strings(chars: np.ndarray) -> pa.StringArray:
    """An (n, w) uint8 matrix of ASCII codes as n strings of width w, without a Python loop."""
    n, w = chars.shape
    offsets = np.arange(n + 1, dtype=np.int64) * w
    return pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars).tobytes())
    ).cast(pa.string())


def uuid4_strings(rng: np.random.Generator, n: int) -> pa.StringArray:
    raw = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hexchars = np.frombuffer(raw.tobytes().hex().encode(), dtype=np.uint8).reshape(n, 32)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    for src, dst in (((0, 8), (0, 8)), ((8, 12), (9, 13)), ((12, 16), (14, 18)), ((16, 20), (19, 23)), ((20, 32), (24, 36))):
        out[:, dst[0] : dst[1]] = hexchars[:, src[0] : src[1]]
    return fixed_width_strings(out)


def prefixed_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, pa.int64()), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


# (prefix, length, share): Visa, Mastercard, Elo, Hipercard, Amex.
CARD_BRANDS = (("4", 16, 0.45), ("5", 16, 0.30), ("636368", 16, 0.12), ("606282", 19, 0.05), ("37", 15, 0.08))


def luhn_pans(rng: np.random.Generator, n: int) -> pa.StringArray:
    """Luhn-valid card numbers of mixed brands and lengths (13-19 digits)."""
    width = 19
    brand = pick(rng, np.cumsum([b[2] for b in CARD_BRANDS]), n)
    lengths = np.array([b[1] for b in CARD_BRANDS])[brand]
    digits = rng.integers(0, 10, size=(n, width), dtype=np.int64)
    # Right-aligned: leading zero padding adds nothing to the Luhn sum.
    digits[np.arange(width)[None, :] < (width - lengths)[:, None]] = 0
    for b, (prefix, length, _) in enumerate(CARD_BRANDS):
        rows = brand == b
        start = width - length
        if prefix == "5":  # Mastercard 51-55
            digits[rows, start] = 5
            digits[rows, start + 1] = rng.integers(1, 6, size=int(rows.sum()))
        else:
            digits[rows, start : start + len(prefix)] = np.array([int(c) for c in prefix])
    payload = digits[:, : width - 1]
    doubled = payload[:, 1::2] * 2  # every second digit left of the check digit
    total = np.where(doubled > 9, doubled - 9, doubled).sum(axis=1) + payload[:, 0::2].sum(axis=1)
    digits[:, width - 1] = (10 - total % 10) % 10
    chars = (digits + ord("0")).astype(np.uint8)
    keep = np.arange(width)[None, :] >= (width - lengths)[:, None]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars[keep].tobytes())).cast(pa.string())


@dataclass
class Dimensions:
    customer_ids: pa.Array
    card_customer: np.ndarray
    card_cdf: np.ndarray
    card_pans: pa.Array
    card_tokens: pa.Array
    card_last4: pa.Array  # what sources send beside a token: null for a few issuers
    pan_last4: pa.Array
    merchant_ids: pa.Array
    merchant_mcc: np.ndarray  # index into catalog.MCC_PROFILES
    merchant_market: np.ndarray  # index into catalog.MARKETS
    pools: list[tuple[np.ndarray, np.ndarray]]  # per market: merchant indices, popularity cdf
    scenario_card_start: int = 0  # cards from here on are fraud scenarios' own (card_cdf gives them no weight)


def build_dimensions(seed: int, rows_per_day: int, token_salt: str) -> Dimensions:
    rng = np.random.default_rng([seed, 0])
    n_customers = max(500, rows_per_day // 6)
    n_cards = n_customers + n_customers // 4  # every customer has a card, some two
    card_customer = np.concatenate([np.arange(n_customers), rng.integers(0, n_customers, n_cards - n_customers)])
    # how often each card is used: skewed, but no card above ~2x the average (about ten a day): a
    # card used a hundred times a day is a fraud pattern, not ordinary traffic
    card_cdf = np.cumsum(np.minimum(rng.lognormal(0.0, 1.0, n_cards), 2.0))
    pans = luhn_pans(rng, n_cards)
    # the fraud scenarios' cards and customers, from a generator of their own (ordinary data unchanged)
    n_scenario = fraud_scenarios.POOL_DAYS * fraud_scenarios.scenario_cards_per_day(rows_per_day)
    scenario_rng = np.random.default_rng([seed, 1])
    pans = pa.concat_arrays([pans, luhn_pans(scenario_rng, n_scenario)])
    card_customer = np.concatenate([card_customer, n_customers + np.arange(n_scenario)])
    card_cdf = np.concatenate([card_cdf, np.full(n_scenario, card_cdf[-1])])
    tokens = pa.array([card_token(p, token_salt) for p in pans.to_pylist()], pa.string())
    pan_last4 = pc.utf8_slice_codeunits(pans, start=-4)
    last4_unknown = np.concatenate([rng.random(n_cards) < 0.03, np.zeros(n_scenario, dtype=bool)])
    card_last4 = pc.if_else(pa.array(last4_unknown), pa.scalar(None, pa.string()), pan_last4)

    n_merchants = max(400, rows_per_day // 40)
    shares = np.array([m[2] for m in cat.MARKETS])
    per_market = np.maximum(np.round(shares * n_merchants).astype(int), 8)
    per_market[0] = max(per_market[0], len(cat.MCC_PROFILES))
    merchant_market = np.repeat(np.arange(len(cat.MARKETS)), per_market)
    mcc_cdf = np.cumsum([p[4] for p in cat.MCC_PROFILES])
    merchant_mcc = pick(rng, mcc_cdf, len(merchant_market))
    merchant_mcc[: len(cat.MCC_PROFILES)] = np.arange(len(cat.MCC_PROFILES))  # every MCC exists at home
    popularity = rng.lognormal(0.0, 1.2, len(merchant_market))
    pools = []
    for m in range(len(cat.MARKETS)):
        idx = np.flatnonzero(merchant_market == m)
        pools.append((idx, np.cumsum(popularity[idx])))
    return Dimensions(
        customer_ids=prefixed_ids("C", np.arange(1, n_customers + n_scenario + 1), 7),
        card_customer=card_customer,
        card_cdf=card_cdf,
        card_pans=pans,
        card_tokens=tokens,
        card_last4=card_last4,
        pan_last4=pan_last4,
        merchant_ids=prefixed_ids("M", np.arange(1, len(merchant_market) + 1), 6),
        merchant_mcc=merchant_mcc,
        merchant_market=merchant_market,
        pools=pools,
        scenario_card_start=n_cards,
    )


def fx_scaled(rates: dict[str, Decimal]) -> tuple[np.ndarray, int]:
    """Rates of catalog.CURRENCIES as exact integers times 10**scale."""
    scale = max(max(0, -rates[c].as_tuple().exponent) for c in cat.CURRENCIES)
    scaled = np.array([int(rates[c] * 10**scale) for c in cat.CURRENCIES], dtype=np.int64)
    return scaled, scale


@dataclass
class DayTransactions:
    day: date
    transaction_id: pa.Array
    event_ts: np.ndarray  # epoch seconds, UTC
    card: np.ndarray
    merchant: np.ndarray
    mcc: np.ndarray
    market: np.ndarray
    currency: np.ndarray  # index into catalog.CURRENCIES
    cents: np.ndarray  # amount in minor units of `currency`, > 0
    channel: np.ndarray
    status: np.ndarray
    fraud: np.ndarray  # index into FRAUD_PATTERNS
    planted_outlier: np.ndarray
    near_miss: np.ndarray  # index into FRAUD_PATTERNS: the rule a planted near miss must not fire
    in_scenario: np.ndarray  # a row of a planted fraud scenario (its history too)

    def __len__(self) -> int:
        return len(self.cents)

    @property
    def planted(self) -> np.ndarray:
        """Fraud and outlier rows stay clean so the truth always holds them."""
        return self.in_scenario | self.planted_outlier

    def reporting_cents(self, fx: tuple[np.ndarray, int]) -> np.ndarray:
        scaled, scale = fx
        unit = 10**scale
        # round half up of a positive amount, in exact integer arithmetic
        return (self.cents * scaled[self.currency] + unit // 2) // unit

    def is_outlier(self, fx: tuple[np.ndarray, int]) -> np.ndarray:
        return self.reporting_cents(fx) >= cat.OUTLIER_X_MEDIAN * MCC_MEDIAN_CENTS[self.mcc]


def _diurnal_seconds(rng: np.random.Generator, n: int) -> np.ndarray:
    return pick(rng, UTC_HOUR_CDF, n) * 3600 + rng.integers(0, 3600, n)


def _merchants_in(rng: np.random.Generator, dims: Dimensions, market: np.ndarray) -> np.ndarray:
    merchant = np.empty(len(market), dtype=np.int64)
    for m, (idx, cdf) in enumerate(dims.pools):
        rows = np.flatnonzero(market == m)
        if len(rows):
            merchant[rows] = idx[pick(rng, cdf, len(rows))]
    return merchant


def _home_merchants_with(rng: np.random.Generator, dims: Dimensions, mccs: tuple[str, ...], n: int) -> np.ndarray:
    wanted = np.flatnonzero(np.isin(dims.merchant_mcc, [cat.MCC_CODES.index(m) for m in mccs])
                            & (dims.merchant_market == 0))
    # distinct merchants: a spree planted as 8 merchants must not repeat one (then it is 7)
    return rng.choice(wanted, n, replace=n > len(wanted))


def _channels(rng: np.random.Generator, mcc: np.ndarray) -> np.ndarray:
    u = rng.random(len(mcc)) * MCC_CHANNEL_CDF[mcc, -1]
    return np.minimum((u[:, None] >= MCC_CHANNEL_CDF[mcc]).sum(axis=1), len(CHANNELS) - 1)


def _natural_brl_cents(rng: np.random.Generator, mcc: np.ndarray) -> np.ndarray:
    median = MCC_MEDIAN_CENTS[mcc]
    cents = median * np.exp(MCC_SIGMA[mcc] * rng.standard_normal(len(mcc)))
    cents = np.clip(cents, 100, cat.NATURAL_CAP_X_MEDIAN * median)
    atm = mcc == cat.MCC_CODES.index(cat.ATM_MCC)
    cents[atm] = np.maximum(np.round(cents[atm] / 2000) * 2000, 2000)  # notes of R$20
    return cents


def build_day(dims: Dimensions, day: date, rows_per_day: int, seed: int, fx: tuple[np.ndarray, int]) -> DayTransactions:
    if rows_per_day < MIN_ROWS_PER_DAY:
        raise ValueError(f"rows_per_day must be at least {MIN_ROWS_PER_DAY}")
    rng = np.random.default_rng([seed, day.toordinal()])
    n = rows_per_day
    scenario_rng = np.random.default_rng([seed, day.toordinal(), 1])
    scenarios = fraud_scenarios.plant(
        scenario_rng, dims, day, rows_per_day, STATUS, CHANNEL,
        lambda mccs, k: _home_merchants_with(scenario_rng, dims, mccs, k),
        lambda market, k: scenario_rng.choice(dims.pools[market][0], k),
    )
    n_normal = n - sum(len(p["ts"]) for p in scenarios)
    parts: list[dict[str, np.ndarray]] = []

    # Ordinary traffic. Abroad a card is used online (card present abroad is what the travel rules
    # look at, and fraud_scenarios plants it).
    market = pick(rng, np.cumsum([m[2] for m in cat.MARKETS]), n_normal)
    merchant = _merchants_in(rng, dims, market)
    mcc = dims.merchant_mcc[merchant]
    brl_cents = _natural_brl_cents(rng, mcc)
    outliers = rng.choice(n_normal, max(1, n // 2_000), replace=False)
    brl_cents[outliers] = MCC_MEDIAN_CENTS[mcc[outliers]] * rng.uniform(60, 300, len(outliers))
    planted_outlier = np.zeros(n_normal, dtype=bool)
    planted_outlier[outliers] = True
    # (cash is drawn at home: an ATM abroad is card present)
    atm_abroad = np.flatnonzero((market != 0) & (mcc == cat.MCC_CODES.index(cat.ATM_MCC)))
    market[atm_abroad] = 0
    merchant[atm_abroad] = _home_merchants_with(rng, dims, (cat.ATM_MCC,), len(atm_abroad))
    mcc = dims.merchant_mcc[merchant]
    channel = np.where(market == 0, _channels(rng, mcc), CHANNEL["ecommerce"])
    parts.append(dict(
        ts=_diurnal_seconds(rng, n_normal), card=pick(rng, dims.card_cdf, n_normal), merchant=merchant, mcc=mcc,
        market=market, brl_cents=brl_cents, channel=channel,
        status=pick(rng, np.cumsum(cat.STATUS_SHARES), n_normal), fraud=np.full(n_normal, NO_FRAUD),
        outlier=planted_outlier, near_miss=np.full(n_normal, NO_FRAUD), scenario=np.zeros(n_normal, dtype=bool),
    ))
    parts += scenarios

    col = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    currency = MARKET_CURRENCY[col["market"]]
    scaled, scale = fx
    cents = np.maximum(np.round(col["brl_cents"] * 10**scale / scaled[currency]), 1).astype(np.int64)
    return DayTransactions(
        day=day,
        transaction_id=uuid4_strings(rng, n),
        event_ts=(day_start_epoch(day) + col["ts"]).astype(np.int64),
        card=col["card"].astype(np.int64),
        merchant=col["merchant"].astype(np.int64),
        mcc=col["mcc"].astype(np.int64),
        market=col["market"].astype(np.int64),
        currency=currency.astype(np.int64),
        cents=cents,
        channel=col["channel"].astype(np.int64),
        status=col["status"].astype(np.int64),
        fraud=col["fraud"].astype(np.int8),
        planted_outlier=col["outlier"],
        near_miss=col["near_miss"].astype(np.int8),
        in_scenario=col["scenario"],
    )
