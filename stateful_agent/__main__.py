"""``python -m stateful_agent migrate``: move the previous version's Cosmos DB sessions into the current layout
(``python -m stateful_agent settings`` prints the settings reference).

Configured like the app (``COSMOS_ENDPOINT``, ``COSMOS_DATABASE``, ``COSMOS_CONTAINER``, ``COSMOS_KEY`` or
Microsoft Entra ID, ``COSMOS_CREATE_CONTAINER``), from the environment and, when given, a
``local.settings.json``. Progress goes to standard error; the last line on standard output is the report as
JSON. Exit status: 0 when every session is in the target, 1 when items were skipped (listed with their
reasons), 2 when the migration could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from .errors import AgentServiceError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stateful_agent", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser(
        "migrate",
        help="copy the previous version's sessions (container partitioned by /session_id) into the current one",
        description="Copy every session of a container of the previous layout (partitioned by /session_id) into "
        "a container partitioned by [/owner, /session_id]. Idempotent and resumable; the source is never changed.",
    )
    migrate.add_argument("--from-container", required=True, metavar="NAME", help="the previous version's container")
    migrate.add_argument("--to-container", metavar="NAME", help="the target container (default: COSMOS_CONTAINER)")
    migrate.add_argument(
        "--owner",
        default="",
        help="owner of the copied sessions (default '': the sessions AUTH_MODE=none serves; with Easy Auth, "
        "the owner key of a user)",
    )
    migrate.add_argument("--dry-run", action="store_true", help="validate and report; write nothing")
    migrate.add_argument("--settings-file", metavar="PATH", help="a local.settings.json to read settings from")
    commands.add_parser("settings", help="print the settings reference (docs/settings.md) as a Markdown table")
    args = parser.parse_args(argv)
    if args.command == "settings":
        from .platform.settings import reference

        print(reference(), end="")
        return 0
    from .platform.identity import is_owner_key

    if not is_owner_key(args.owner):
        parser.error("--owner must be '' or an owner key 'provider/principal id', e.g. aad/<object id>")
    try:
        report = asyncio.run(_migrate(args))
    except AgentServiceError as error:
        print(f"error: {error.detail}" + (f" ({error.internal})" if error.internal else ""), file=sys.stderr)
        return 2
    for item in report.skipped:
        print(f"skipped {item.id!r} (session {item.session_id!r}): {item.reason}", file=sys.stderr)
    print(report.summary(), file=sys.stderr)
    print(json.dumps(report.as_json(), ensure_ascii=False))
    return 1 if report.skipped else 0


async def _migrate(args: argparse.Namespace):  # -> MigrationReport
    from .platform.settings import load_local_settings, load_settings
    from .stores import create_store
    from .stores.cosmos_migrate import migrate

    if args.settings_file:
        load_local_settings(Path(args.settings_file))
    settings = load_settings({**os.environ, "MAF_SESSION_BACKEND": "cosmos"})
    settings = replace(settings, cosmos_container=args.to_container or settings.cosmos_container)
    store = create_store(settings)

    def progress(report, sessions: int) -> None:
        if sessions % 25 == 0:
            print(f"... {sessions} session(s) read: {report.summary()}", file=sys.stderr, flush=True)

    async with store:
        return await migrate(
            store,  # type: ignore[arg-type]  # a CosmosSnapshotStore: the backend is cosmos
            args.from_container,
            owner=args.owner,
            dry_run=args.dry_run,
            progress=progress,
        )


if __name__ == "__main__":
    sys.exit(main())
