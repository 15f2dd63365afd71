"""`python -m fluxo.quality build-suites`: regenerate the suite derived from the contract."""

from __future__ import annotations

import argparse

from fluxo.quality.suites import build_suites


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fluxo.quality")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "build-suites",
        help="derive expectations/transactions_contract.json from fluxo.contract",
    )
    args = parser.parse_args(argv)
    if args.command == "build-suites":
        for path in build_suites():
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
