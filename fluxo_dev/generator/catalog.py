"""What the synthetic business looks like: merchant categories, markets, and how
each source spells channels and statuses. Pure data; the samplers live in
`universe.py`."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from fluxo import reference
from fluxo.contract import CHANNELS, CURRENCIES as ISO_4217, DEFAULT_REPORTING_CURRENCY, STATUSES

FX_RATES_PATH = Path(reference.__file__).parent / reference.FX_RATES_FILE

# (mcc, description, median amount in BRL, lognormal sigma, share of merchants,
#  channel mix in contract.CHANNELS order: pos, ecommerce, atm, mobile, moto)
MCC_PROFILES: tuple[tuple[str, str, float, float, float, tuple[float, ...]], ...] = (
    ("5411", "grocery", 95.0, 0.8, 0.24, (0.85, 0.03, 0.0, 0.12, 0.0)),
    ("5812", "restaurants", 70.0, 0.7, 0.18, (0.80, 0.05, 0.0, 0.15, 0.0)),
    ("5541", "fuel", 180.0, 0.5, 0.10, (0.90, 0.0, 0.0, 0.10, 0.0)),
    ("5999", "e-commerce / misc retail", 140.0, 1.0, 0.14, (0.15, 0.70, 0.0, 0.15, 0.0)),
    ("5912", "pharmacy", 60.0, 0.7, 0.08, (0.85, 0.05, 0.0, 0.10, 0.0)),
    ("5311", "department stores", 220.0, 0.9, 0.05, (0.70, 0.20, 0.0, 0.10, 0.0)),
    ("4121", "taxi / ride hailing", 28.0, 0.6, 0.07, (0.05, 0.05, 0.0, 0.90, 0.0)),
    ("6011", "ATM cash", 200.0, 0.7, 0.05, (0.0, 0.0, 1.0, 0.0, 0.0)),
    ("4511", "airlines", 1300.0, 0.6, 0.02, (0.0, 0.70, 0.0, 0.15, 0.15)),
    ("7011", "hotels", 650.0, 0.7, 0.02, (0.50, 0.40, 0.0, 0.0, 0.10)),
    ("5732", "electronics", 900.0, 0.8, 0.02, (0.40, 0.50, 0.0, 0.10, 0.0)),
    ("4814", "telecom", 90.0, 0.4, 0.015, (0.0, 0.50, 0.0, 0.30, 0.20)),
    ("5944", "jewelry", 400.0, 0.8, 0.005, (0.80, 0.20, 0.0, 0.0, 0.0)),
    ("7995", "betting", 80.0, 1.0, 0.005, (0.0, 0.60, 0.0, 0.40, 0.0)),
    ("4829", "money transfer", 300.0, 0.9, 0.005, (0.0, 0.50, 0.0, 0.50, 0.0)),
)
MCC_CODES = tuple(p[0] for p in MCC_PROFILES)
# Natural amounts are capped well below the outlier threshold so that the only
# outliers are the planted ones (ground truth stays exact).
NATURAL_CAP_X_MEDIAN = 20.0
OUTLIER_X_MEDIAN = 50.0
CARD_TESTING_MCC = "5999"
HIGH_RISK_MCCS = ("5944", "7995", "4829")
ATM_MCC = "6011"

# Markets: (country, currency, share of transactions).
MARKETS: tuple[tuple[str, str, float], ...] = (
    ("BR", "BRL", 0.85),
    ("US", "USD", 0.05),
    ("PT", "EUR", 0.015),
    ("ES", "EUR", 0.01),
    ("FR", "EUR", 0.0075),
    ("DE", "EUR", 0.0075),
    ("AR", "ARS", 0.025),
    ("CL", "CLP", 0.01),
    ("MX", "MXN", 0.01),
    ("GB", "GBP", 0.015),
)
COUNTRIES = tuple(m[0] for m in MARKETS)
# The currencies the synthetic business trades in (each has a rate in fluxo/reference/fx_rates.csv).
CURRENCIES = tuple(dict.fromkeys(m[1] for m in MARKETS))
HOME_COUNTRY = "BR"

STATUS_SHARES = (0.85, 0.12, 0.03)  # contract.STATUSES order

# How each source spells the closed sets (index = position in CHANNELS/STATUSES).
# s3 CSV: Portuguese/English synonyms in any case; "drift" spellings are rarer
# forms that are still synonyms (fluxo.contract.*_SYNONYMS, case-insensitive).
CSV_CHANNEL = (("Presencial", "presencial", "POS"), ("Online", "ONLINE", "e-commerce"), ("ATM", "caixa_eletronico"),
               ("App", "mobile"), ("Telefone", "MOTO"))
CSV_CHANNEL_DRIFT = (("card_present", "LOJA", "Point_Of_Sale"), ("WEB", "web", "E-Commerce"), ("Atm", "CAIXA_ELETRONICO"),
                     ("wallet", "APP"), ("mail_order", "TELEFONE"))
CSV_STATUS = (("aprovada", "Aprovada"), ("Negada", "recusada"), ("estornada", "Estornada"))
CSV_STATUS_DRIFT = (("APPROVED", "OK", "00", "Aprovado"), ("DECLINED", "51", "05", "NEGADA"), ("chargeback", "Reversed", "ESTORNO"))
DB_CHANNEL = ("POS", "ECOM", "ATM", "MOB", "MOTO")
DB_STATUS = (("00",), ("05", "51"), ("R1",))

# Values outside the closed sets / patterns, per canonical column.
INVALID_VALUES = {
    "channel": ("pix", "kiosk", "drive_thru", "qr_code"),
    "status": ("pendente", "pending", "em_analise", "timeout"),
    "currency": ("BTC", "R$", "REAL", "US$"),
    "country": ("Brasil", "BRA", "B1", "XX1"),
    "mcc": ("54A1", "541", "99999", "MCC"),
}
DB_INVALID_VALUES = {"channel": ("KIOSK", "PIX", "XX"), "status": ("99", "P0", "PEND")}
# Not a number in the source's format, under strict or lenient parsing alike.
INVALID_AMOUNTS_BR = ("N/D", "12,34,56", "abc", "#VALOR!")
INVALID_AMOUNTS_DOT = ("N/A", "1.234.56", "abc", "12,50")

assert set(CURRENCIES) <= set(ISO_4217)
assert len(CSV_CHANNEL) == len(CHANNELS) == len(DB_CHANNEL) and len(CSV_STATUS) == len(STATUSES)


def load_fx_rates(path: Path = FX_RATES_PATH) -> dict[str, Decimal]:
    """1 unit of currency = rate BRL (the reference file's quoting)."""
    rates = reference.parse_fx_rates(Path(path).read_text(encoding="utf-8"))
    missing = set(CURRENCIES) - rates.keys()
    if missing:
        raise ValueError(f"{path} lacks FX rates for {sorted(missing)}")
    if rates.get(DEFAULT_REPORTING_CURRENCY) != Decimal(1):
        raise ValueError("fx_rates.csv must quote rates to the reporting currency BRL")
    return rates
