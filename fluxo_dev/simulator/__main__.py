"""python -m fluxo_dev.simulator --data DIR --port P [--token T] [--api-key K] [--faults all | name=value ...]"""

from __future__ import annotations

import argparse
import os

import uvicorn

from .app import ALL_FAULTS, FAULT_DEFAULTS, create_app


def parse_faults(items: list[str]) -> dict[str, float]:
    faults: dict[str, float] = {}
    for item in items:
        if item == "all":
            faults.update(ALL_FAULTS)
            continue
        name, sep, value = item.partition("=")
        if not sep or name not in FAULT_DEFAULTS:
            raise argparse.ArgumentTypeError(f"fault must be 'all' or one of {sorted(FAULT_DEFAULTS)}=VALUE: {item!r}")
        faults[name] = float(value)
    return faults


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fluxo_dev.simulator", description=__doc__)
    parser.add_argument("--data", required=True, help="generator output directory (holds api/dt=*/page-*.json)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default=os.environ.get("FLUXO_SIMULATOR_TOKEN", ""),
                        help="bearer token (default: $FLUXO_SIMULATOR_TOKEN, else a random one is printed)")
    parser.add_argument("--api-key", default=os.environ.get("FLUXO_SIMULATOR_API_KEY", ""),
                        help="value accepted in X-API-Key (default: the token)")
    parser.add_argument("--faults", nargs="*", default=[], help="'all' and/or name=value, e.g. error_rate=0.1")
    args = parser.parse_args(argv)
    app = create_app(args.data, token=args.token, api_key=args.api_key, faults=parse_faults(args.faults))
    if not args.token:
        print(f"development token: {app.state.token}", flush=True)
    print(f"serving {len(app.state.store.keys)} records on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
