"""Planted fraud: per rule of expectations/fraud_rules.json, positives and near-miss negatives.

Each scenario runs on a card of its own (`scenario_card`: a block of cards ordinary traffic never
draws, a slice per day, reused only after POOL_DAYS days), so its history is exactly what it
plants. Positives are labelled with the rule in the ground truth (`fraud_pattern`), the one row
the rule must flag; the near misses (`near_miss` = the rule) fall just short of it: the rule must
stay silent on every row of theirs. About 1 scenario of each kind per 10,000 transactions (at
least 3), so fraud is well under 1 % of transactions. Thresholds here follow the suite's defaults
(6 per 10 min, 8 merchants per hour, 150 x median, 3 card-present, 3 small declines <= 10,
5 minutes, > 2000 at night); a run with an edited suite is scored against these labels as they are.
"""

from __future__ import annotations

from datetime import date

import numpy as np

from fluxo.contract import FRAUD_RULES
from fluxo.reference import travel_minutes_table

from . import catalog as cat

POOL_DAYS = 64
KINDS = 2  # positive, near miss
ORDINARY_MCCS = ("5411", "5812", "5912", "5541")
MINUTE = 60
HOUR = 3600
DAY = 86_400


def scenarios_per_rule(rows_per_day: int) -> int:
    return max(3, rows_per_day // 10_000)


def scenario_cards_per_day(rows_per_day: int) -> int:
    return len(FRAUD_RULES) * KINDS * scenarios_per_rule(rows_per_day)


def _rows(**columns) -> dict[str, np.ndarray]:
    n = len(columns["ts"])
    out = {k: np.asarray(v) if np.ndim(v) else np.full(n, v) for k, v in columns.items()}
    return out


def plant(rng: np.random.Generator, dims, day: date, rows_per_day: int, status: dict, channel: dict,
          home_merchants, market_merchants) -> list[dict[str, np.ndarray]]:
    """The scenario rows of one day, as parts for universe.build_day (`fraud`/`near_miss`: 1 + index
    of the rule in FRAUD_RULES, 0 for none)."""
    k = scenarios_per_rule(rows_per_day)
    first_card = dims.scenario_card_start + (day.toordinal() % POOL_DAYS) * scenario_cards_per_day(rows_per_day)
    cards = iter(range(first_card, first_card + scenario_cards_per_day(rows_per_day)))
    travel = travel_minutes_table()
    far = [m for m, (country, _c, _s) in enumerate(cat.MARKETS)
           if m and travel.get(frozenset((cat.HOME_COUNTRY, country)), 0) > 0]
    parts: list[dict[str, np.ndarray]] = []

    def add(rule: str, positive: bool, ts, amounts_brl, *, merchants=None, market=0, chan="pos", stat="approved",
            flagged=-1, mccs=ORDINARY_MCCS):
        """One scenario: rows at `ts` (seconds of the day) on a fresh card; row `flagged` is the positive."""
        n = len(ts)
        card = next(cards)
        if merchants is None:
            merchants = np.repeat(home_merchants(mccs, 1), n)
        markets = np.broadcast_to(np.asarray(market), (n,)).copy()
        code = 1 + FRAUD_RULES.index(rule)
        fraud = np.zeros(n, dtype=np.int64)
        near = np.zeros(n, dtype=np.int64)
        if positive:
            fraud[flagged] = code
        else:
            near[:] = code
        stat = np.broadcast_to(np.asarray(stat), (n,))
        chan = np.broadcast_to(np.asarray(chan), (n,)).copy()
        chan[dims.merchant_mcc[np.asarray(merchants)] == cat.MCC_CODES.index(cat.ATM_MCC)] = "atm"  # cash abroad
        parts.append(_rows(
            ts=np.asarray(ts, dtype=np.int64), card=np.full(n, card), merchant=np.asarray(merchants),
            mcc=dims.merchant_mcc[np.asarray(merchants)], market=markets,
            brl_cents=np.asarray(amounts_brl, dtype=float) * 100,
            channel=np.array([channel[c] for c in chan]), status=np.array([status[s] for s in stat]),
            fraud=fraud, outlier=np.zeros(n, dtype=bool), near_miss=near, scenario=np.ones(n, dtype=bool),
        ))

    def distinct_amounts(n: int, low: float = 40, high: float = 160) -> np.ndarray:
        return np.round(rng.uniform(low, high, n), 2) + np.arange(n) * 0.01

    for positive in (True, False):
        for _ in range(k):
            # velocity_10min: 6 (positive) or 5 transactions of one card within 9 minutes, one merchant
            n = 6 if positive else 5
            start = rng.integers(HOUR, DAY - HOUR)
            add("velocity_10min", positive, start + np.arange(n) * 100, distinct_amounts(n))

            # merchants_1h: 8 (positive) or 7 different merchants within 56 minutes
            n = 8 if positive else 7
            start = rng.integers(HOUR, DAY - 2 * HOUR)
            add("merchants_1h", positive, start + np.arange(n) * 8 * MINUTE, distinct_amounts(n),
                merchants=home_merchants(ORDINARY_MCCS, n))

            # amount_vs_median: five ordinary purchases, then 200-300x (positive) or 80-130x their median
            start = rng.integers(0, 6 * HOUR)
            history = distinct_amounts(5, 40, 60)
            factor = rng.uniform(200, 300) if positive else rng.uniform(80, 130)
            add("amount_vs_median", positive, [*(start + np.arange(5) * 40 * MINUTE), start + 14 * HOUR],
                [*history, round(float(np.median(history)) * factor, 2)])

            # unusual_country: card present at home 3 times (positive) or twice, 20+ hours later abroad
            n_home = 3 if positive else 2
            start = rng.integers(0, 2 * HOUR)
            abroad = int(rng.choice(far))
            away = market_merchants(abroad, 1)
            add("unusual_country", positive, [*(start + np.arange(n_home) * 20 * MINUTE), start + 21 * HOUR + 600],
                distinct_amounts(n_home + 1),
                merchants=np.concatenate([home_merchants(ORDINARY_MCCS, n_home), away]),
                market=np.array([0] * n_home + [abroad]))

            # impossible_travel: present at home, then abroad after 20-60 % (positive) or 120-200 % of
            # the minimum travel time between the two countries
            abroad = int(rng.choice(far))
            minimum = travel[frozenset((cat.HOME_COUNTRY, cat.MARKETS[abroad][0]))] * MINUTE
            gap = int(minimum * (rng.uniform(0.2, 0.6) if positive else rng.uniform(1.2, 2.0)))
            start = rng.integers(0, DAY - gap - MINUTE)
            add("impossible_travel", positive, [start, start + gap], distinct_amounts(2),
                merchants=np.concatenate([home_merchants(ORDINARY_MCCS, 1), market_merchants(abroad, 1)]),
                market=np.array([0, abroad]))

            # card_testing: 3-4 (positive) or 2 declined attempts of 1-9 on e-commerce, then an approval
            n = int(rng.integers(3, 5)) if positive else 2
            start = rng.integers(HOUR, DAY - HOUR)
            add("card_testing", positive, start + np.arange(n + 1) * 3 * MINUTE,
                [*np.round(rng.uniform(1, 9, n), 2), round(float(rng.uniform(80, 400)), 2)],
                chan="ecommerce", stat=["declined"] * n + ["approved"], mccs=(cat.CARD_TESTING_MCC,))

            # duplicate_charge: the same charge again 30 s-4 min (positive) or 6-15 min later
            start = rng.integers(HOUR, DAY - HOUR)
            gap = int(rng.integers(30, 240) if positive else rng.integers(6 * MINUTE, 15 * MINUTE))
            amount = distinct_amounts(1)[0]
            add("duplicate_charge", positive, [start, start + gap], [amount, amount])

            # night_high_risk_mcc: 2500-6000 at a betting/jewelry/transfer merchant, 00:00-04:59 local
            # (positive) or 10:00-19:59 local (São Paulo is UTC-3)
            local = rng.integers(0, 5 * HOUR) if positive else rng.integers(10 * HOUR, 20 * HOUR)
            add("night_high_risk_mcc", positive, [(local + 3 * HOUR) % DAY], [round(float(rng.uniform(2500, 6000)), 2)],
                mccs=cat.HIGH_RISK_MCCS)
    return parts
