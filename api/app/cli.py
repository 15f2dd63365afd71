"""Manage the API's OAuth2 clients and signing keys (run from api/, or with PYTHONPATH=api):

    python -m app.cli clients create NAME --scopes metrics:read runs:read [--description TEXT]
    python -m app.cli clients list
    python -m app.cli clients rotate NAME [--grace SECONDS]   # prints the new secret once
    python -m app.cli clients disable NAME | enable NAME
    python -m app.cli clients scopes NAME SCOPE...
    python -m app.cli keys list | rotate | retire KID

It reads the same FLUXO_API_* settings as the server (the warehouse URL, the key directory).
"""

from __future__ import annotations

import argparse
import sys

import psycopg

from app.core import clients as store
from app.core.config import KNOWN_SCOPES, Settings
from app.core.db import connect_sync
from app.core.security import retire_key, write_new_key


def _clients(args: argparse.Namespace, settings: Settings) -> int:
    with connect_sync(settings) as conn:
        if args.action == "create":
            secret = store.create_client(conn, settings, args.name, args.scopes, args.description or "")
            print(f"client_id={args.name}\nclient_secret={secret}\n(the secret is shown once; store it now)")
        elif args.action == "list":
            for row in store.list_clients(conn):
                print(store.describe(row))
        elif args.action == "rotate":
            secret = store.rotate_secret(conn, settings, args.name, args.grace)
            grace = f"; the previous secret works for {args.grace} s more" if args.grace else ""
            print(f"client_id={args.name}\nclient_secret={secret}\n(shown once{grace})")
        elif args.action in ("disable", "enable"):
            store.set_disabled(conn, args.name, args.action == "disable")
            print(f"{args.name}: {args.action}d")
        elif args.action == "scopes":
            store.set_scopes(conn, args.name, args.scopes)
            print(f"{args.name}: {' '.join(sorted(set(args.scopes)))}")
    return 0


def _keys(args: argparse.Namespace, settings: Settings) -> int:
    if settings.jwt_algorithm != "RS256":
        print("FLUXO_API_JWT_ALGORITHM is not RS256: there are no signing keys", file=sys.stderr)
        return 2
    directory = settings.signing_keys_dir
    if args.action == "rotate":
        kid = write_new_key(directory)
        print(f"{kid}: signs new tokens within FLUXO_API_KEY_RELOAD_SECONDS; older keys still verify until retired")
    elif args.action == "retire":
        print(f"retired to {retire_key(directory, args.kid)}")
    else:
        kids = sorted(p.stem for p in directory.glob("*.pem"))
        for kid in kids:
            print(f"{kid}\t{'signing' if kid == kids[-1] else 'verifying'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = parser.add_subparsers(dest="group", required=True)
    clients = groups.add_parser("clients").add_subparsers(dest="action", required=True)
    create = clients.add_parser("create")
    create.add_argument("name")
    create.add_argument("--scopes", nargs="+", required=True, choices=KNOWN_SCOPES)
    create.add_argument("--description")
    clients.add_parser("list")
    rotate = clients.add_parser("rotate")
    rotate.add_argument("name")
    rotate.add_argument("--grace", type=int, default=0, help="seconds the previous secret keeps working")
    for action in ("disable", "enable"):
        clients.add_parser(action).add_argument("name")
    scopes = clients.add_parser("scopes")
    scopes.add_argument("name")
    scopes.add_argument("scopes", nargs="+", choices=KNOWN_SCOPES)
    keys = groups.add_parser("keys").add_subparsers(dest="action", required=True)
    keys.add_parser("list")
    keys.add_parser("rotate")
    keys.add_parser("retire").add_argument("kid")
    args = parser.parse_args(argv)
    settings = Settings()
    try:
        return (_clients if args.group == "clients" else _keys)(args, settings)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    except psycopg.errors.UniqueViolation:
        print(f"error: client {args.name!r} exists already", file=sys.stderr)
        return 1
    except psycopg.errors.CheckViolation:
        print("error: a client id is 1-128 characters of letters, digits and . _ : @ -", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
