"""Dispatch `python -m cli <command>`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli", description="Klaviyo Sync Console commands")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations to DATABASE_URL")
    admin = sub.add_parser(
        "create-admin", help="create an admin user (password from ADMIN_PASSWORD or prompt)"
    )
    admin.add_argument("username")
    sub.add_parser("dev", help="migrate, then run web + worker + sandbox simulator until Ctrl-C")
    args = parser.parse_args(argv)
    if args.command == "migrate":
        from cli.migrate import migrate

        return migrate()
    if args.command == "create-admin":
        from cli.create_admin import create_admin

        return create_admin(args.username)
    from cli.dev import dev

    return dev()


def run() -> int:
    """main() with configuration errors shown as one clear line instead of a traceback."""
    from config.settings import MissingSecretKeyError

    try:
        return main()
    except MissingSecretKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run())
