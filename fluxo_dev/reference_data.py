"""Update and check the reference data in fluxo/reference/ (see its README.md).

    python -m fluxo_dev.reference_data iso [--iso-codes /usr/share/iso-codes/json]
    python -m fluxo_dev.reference_data check

`iso` rewrites countries.csv (ISO 3166-1 alpha-2) and currencies.csv (ISO 4217) from the JSON
files of Debian's `iso-codes` package (`apt-get install iso-codes`; the same data ships in the
PyPI package `pycountry` under `pycountry/databases/`). Nothing is downloaded at run time: the
pipeline only reads the CSV files committed here.

`check` validates every reference file: codes well formed, sorted, unique; MCC ranges inside
the ISO 18245 groups and not overlapping; every FX currency an ISO 4217 code with a positive
rate and BRL = 1. The MCC list has no machine-readable official source (the networks publish
PDF manuals): edit mcc.csv by hand and run `check`.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

from fluxo import reference

REFERENCE_DIR = Path(reference.__file__).parent
ISO_CODES_DIR = Path("/usr/share/iso-codes/json")


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def update_iso(iso_codes: Path = ISO_CODES_DIR, out: Path = REFERENCE_DIR) -> list[Path]:
    countries = json.loads((iso_codes / "iso_3166-1.json").read_text(encoding="utf-8"))["3166-1"]
    currencies = json.loads((iso_codes / "iso_4217.json").read_text(encoding="utf-8"))["4217"]
    _write(out / "countries.csv", ["alpha_2", "name"],
           sorted([c["alpha_2"], c["name"]] for c in countries))
    _write(out / "currencies.csv", ["alpha_3", "numeric", "name"],
           sorted([c["alpha_3"], c["numeric"], c["name"]] for c in currencies))
    return [out / "countries.csv", out / "currencies.csv"]


def problems(ref=reference) -> list[str]:
    """What is wrong with the packaged reference files (empty when they are fine)."""
    found = []

    def codes(name: str, values: tuple[str, ...], pattern: str) -> None:
        bad = [v for v in values if not re.fullmatch(pattern, v)]
        if bad:
            found.append(f"{name}: malformed codes {bad[:5]}")
        if list(values) != sorted(set(values)):
            found.append(f"{name}: codes not sorted or not unique")

    codes("countries.csv", ref.COUNTRY_CODES, r"[A-Z]{2}")
    codes("currencies.csv", ref.CURRENCY_CODES, r"[A-Z]{3}")
    codes("mcc.csv", ref.MCC_CODES, r"[0-9]{4}")
    groups = ref.read_csv("mcc_groups.csv")
    for row in ref.read_csv("mcc.csv"):
        first, last = int(row["first"]), int(row["last"])
        inside = [g for g in groups if int(g["first"]) <= first <= last <= int(g["last"])]
        if not inside or not row["description"].strip():
            found.append(f"mcc.csv: {row['first']}-{row['last']} is not inside one ISO 18245 group or has no description")
    rates = ref.fx_rates()
    unknown = sorted(set(rates) - set(ref.CURRENCY_CODES))
    if unknown:
        found.append(f"{ref.FX_RATES_FILE}: not ISO 4217 codes {unknown}")
    if any(rate <= 0 for rate in rates.values()) or rates.get("BRL") != 1:
        found.append(f"{ref.FX_RATES_FILE}: every rate must be > 0 and BRL must be 1")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fluxo_dev.reference_data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    iso = commands.add_parser("iso", help="rewrite countries.csv and currencies.csv from Debian's iso-codes JSON")
    iso.add_argument("--iso-codes", type=Path, default=ISO_CODES_DIR)
    commands.add_parser("check", help="validate every reference file")
    args = parser.parse_args(argv)
    if args.command == "iso":
        for path in update_iso(args.iso_codes):
            print(f"wrote {path}")
        print("now run `python -m fluxo_dev.reference_data check` and `python -m fluxo.quality build-suites`")
        return 0
    found = problems()
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
