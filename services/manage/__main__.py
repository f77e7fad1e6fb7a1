"""``python -m services.manage <command>``: operator commands.

migrate                  upgrade the metadata DB to the newest schema
create-admin             create the first admin (BM_ADMIN_EMAIL / BM_ADMIN_PASSWORD)
generate-key             print a new Fernet key for BM_CREDENTIAL_KEYS
re-encrypt-credentials   re-encrypt every stored credential under the newest key
reindex                  rebuild backup rows from the manifests in a local destination
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from services.common.errors import BackupManagerError
from services.common.logs import configure_logging
from services.common.migrate import upgrade
from services.common.secrets import resolve_secrets
from services.common.settings import Settings
from services.manage.admin import ensure_first_admin
from services.manage.credentials import reencrypt_credentials
from services.manage.reindex import reindex


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.manage",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="upgrade the metadata DB to the newest schema")
    sub.add_parser("create-admin", help="create the first admin if there are no users")
    sub.add_parser("generate-key", help="print a new Fernet key")
    sub.add_parser(
        "re-encrypt-credentials",
        help="re-encrypt every stored credential under the first key of BM_CREDENTIAL_KEYS",
    )
    reindex_cmd = sub.add_parser(
        "reindex", help="rebuild backup rows from the manifests in a local destination"
    )
    reindex_cmd.add_argument("--destination-path", required=True, type=Path, metavar="PATH")
    reindex_cmd.add_argument(
        "--project", action="append", default=[], metavar="SLUG", help="only this project (repeat)"
    )
    return parser


async def _run(command: str, settings: Settings, args: argparse.Namespace | None = None) -> int:
    if command == "generate-key":
        print(Fernet.generate_key().decode())
        return 0
    if command == "reindex" and args is not None:
        found = await reindex(settings.database_url, args.destination_path, projects=args.project)
        print(found.summary())
        return 0
    secrets = resolve_secrets(settings)
    if command == "migrate":
        await upgrade(settings.database_url)
        print("metadata DB is at the newest schema")
    elif command == "create-admin":
        created = await ensure_first_admin(settings)
        if created is None:
            print("users exist already: nothing created")
        else:
            email, password = created
            print(
                f"admin created: {email}" + (f"\none-time password: {password}" if password else "")
            )
    elif command == "re-encrypt-credentials":
        report = await reencrypt_credentials(settings.database_url, secrets.credential_keys)
        print(report.summary())
    return 0


def main() -> None:
    args = _parser().parse_args()
    settings = Settings()
    configure_logging("manage", settings.log_level, settings.log_format)
    try:
        raise SystemExit(asyncio.run(_run(args.command, settings, args)))
    except BackupManagerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
