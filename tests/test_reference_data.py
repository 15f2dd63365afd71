"""Reference data shipped in fluxo/reference/: well formed, the one source of the contract's closed sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxo import reference
from fluxo.contract import COUNTRIES, CURRENCIES, MCCS, TRANSACTION
from fluxo_dev import reference_data


def test_reference_files_pass_their_checks():
    assert reference_data.problems() == []


def test_contract_closed_sets_are_the_reference_files():
    assert TRANSACTION.column("country").allowed == COUNTRIES == reference.COUNTRY_CODES
    assert TRANSACTION.column("currency").allowed == CURRENCIES == reference.CURRENCY_CODES
    assert TRANSACTION.column("mcc").allowed == MCCS == reference.MCC_CODES
    assert {"BR", "US", "PT", "AR"} <= set(COUNTRIES) and not {"XX", "ZZ", "UK", "EU"} & set(COUNTRIES)
    assert {"BRL", "USD", "JPY"} <= set(CURRENCIES) and not {"BTC", "R$", "US$"} & set(CURRENCIES)
    assert {"5411", "6011", "3000", "3999", "4829"} <= set(MCCS) and not {"0000", "9999", "5410"} & set(MCCS)
    assert set(reference.fx_rates()) <= set(CURRENCIES)


def test_iso_files_regenerate_from_debian_iso_codes(tmp_path):
    source = reference_data.ISO_CODES_DIR
    if not (source / "iso_3166-1.json").is_file():
        pytest.skip("Debian's iso-codes is not installed")
    reference_data.update_iso(source, tmp_path)
    for name in ("countries.csv", "currencies.csv"):
        assert (tmp_path / name).read_text() == (Path(reference.__file__).parent / name).read_text(), name


def test_check_names_what_is_wrong(monkeypatch):
    monkeypatch.setattr(reference, "MCC_CODES", ("5411", "541", "5411"))
    monkeypatch.setattr(reference, "fx_rates", lambda: {"BRL": 1, "BTC": 2})
    found = reference_data.problems(reference)
    assert any("mcc.csv: malformed codes ['541']" in p for p in found)
    assert any("mcc.csv: codes not sorted or not unique" in p for p in found)
    assert any("not ISO 4217 codes ['BTC']" in p for p in found)
