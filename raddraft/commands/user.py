"""`raddraft user`: accounts of the site server (add, list) and tokens for workers."""

from __future__ import annotations

import argparse
import getpass
import sys

HELP = "manage the site server's users: add NAME --role ROLE (password from stdin), list, token NAME"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", metavar="URL", help="the site's index: postgresql://USER@HOST:PORT/DB")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a user; the password is read from stdin (or asked for)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["radiologist", "admin", "worker"])
    actions.add_parser("list", help="the users and their roles")
    token = actions.add_parser("token", help="print a new token for NAME (a worker's --token)")
    token.add_argument("name")
    token.add_argument("--days", type=float, default=365.0, help="how long the token is valid (default 365)")


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {"store.database": args.database}


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            raise SystemExit("raddraft: the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def run(args: argparse.Namespace, config) -> int:
    from dicom_node.db import DatabaseError
    from dicom_node.index import Index
    from raddraft.site_server import site_database
    from server.errors import UserError
    from server.schema import prepare_site_tables
    from server.users import add_user, find_user, issue_token, list_users

    database = site_database(config)
    if not database:
        print("raddraft: give the site's database (--database postgresql://... or [server] database)",
              file=sys.stderr)
        return 2
    try:
        index = Index(database)
    except DatabaseError as exc:
        print(f"raddraft: {exc}", file=sys.stderr)
        return 1
    try:
        prepare_site_tables(index)
        if args.action == "add":
            user = add_user(index, args.name, args.role, _password())
            print(f"added {user.name} ({user.role})")
        elif args.action == "list":
            for user in list_users(index):
                print(f"{user.name}\t{user.role}")
        else:
            user = find_user(index, args.name)
            if user is None:
                print(f"raddraft: no user {args.name}", file=sys.stderr)
                return 1
            print(issue_token(index, user, args.days * 86400.0).token)
        return 0
    except UserError as exc:
        print(f"raddraft: {exc}", file=sys.stderr)
        return 1
    finally:
        index.close()
