"""`python -m api.keys`: issue, list and revoke the gateway's API keys.

    python -m api.keys create --role customer --customer-id c-1
    python -m api.keys create --role operator --name alice
    python -m api.keys list
    python -m api.keys revoke <key id>

`create` prints the new key, alone, on stdout (so `KEY=$(python -m api.keys create ...)`
works); it is shown once and only its hash is stored.
"""

from __future__ import annotations

import argparse
import re
import sys

from api.keystore import KeyStore
from api.principals import Role
from common.settings import get_settings

CUSTOMER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
NAME = re.compile(r"^[A-Za-z0-9_.@ -]{1,64}$")


def _customer_id(value: str) -> str:
    if not CUSTOMER_ID.match(value):
        raise argparse.ArgumentTypeError("1 to 64 letters, digits, '_', '.' or '-'")
    return value


def _name(value: str) -> str:
    if not NAME.match(value):
        raise argparse.ArgumentTypeError("1 to 64 letters, digits, spaces, '_', '.', '@' or '-'")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m api.keys", description=__doc__.split("\n")[0])
    commands = root.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="issue a key and print it on stdout")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--customer-id", type=_customer_id, help="required for --role customer")
    create.add_argument("--name", type=_name, help="who holds it (an operator's name)")
    commands.add_parser("list", help="list keys (never the keys themselves)")
    revoke = commands.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id")
    return root


def store() -> KeyStore:
    return KeyStore(get_settings().database_url("gateway"))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "create":
        role = Role(args.role)
        if role == Role.CUSTOMER and not args.customer_id:
            return _fail("--role customer needs --customer-id")
        if role == Role.OPERATOR and args.customer_id:
            return _fail("--customer-id is only for --role customer")
        issued = store().issue(role, customer_id=args.customer_id, name=args.name)
        print(issued.token)
        print(f"created key {issued.key_id} ({role.value})", file=sys.stderr)
        return 0
    if args.command == "list":
        print(f"{'key id':<17} {'role':<9} {'customer':<16} {'name':<20} {'created':<20} status")
        for key in store().list():
            status = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            print(
                f"{key.key_id:<17} {key.role:<9} {key.customer_id or '-':<16} "
                f"{key.name:<20} {key.created_at:%Y-%m-%d %H:%M:%S}  {status}"
            )
        return 0
    if not store().revoke(args.key_id):
        return _fail(f"no key with ID {args.key_id!r} (see `python -m api.keys list`)")
    print(f"revoked key {args.key_id}", file=sys.stderr)
    return 0


def _fail(message: str) -> int:
    print(f"api.keys: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
