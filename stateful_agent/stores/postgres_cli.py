"""``python -m stateful_agent.stores.postgres {migrate,cleanup,grants ROLE}``: the PostgreSQL store's upkeep from
the command line, configured like the app."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence

from ..errors import AgentServiceError
from .postgres import PostgresSnapshotStore
from .postgres_schema import GRANTS


def main(argv: Sequence[str] | None = None, *, store_factory: Callable[[], PostgresSnapshotStore] | None = None) -> int:
    """``python -m stateful_agent.stores.postgres {migrate,cleanup,grants ROLE}``, configured like the app
    (``grants`` only prints the statements that let the app's role use the tables)."""
    parser = argparse.ArgumentParser(
        prog="python -m stateful_agent.stores.postgres",
        description="Create or upgrade the PostgreSQL schema, delete expired sessions, or print the grants "
        "the app's role needs. Connects with POSTGRES_DSN or the PG* environment variables, as the app does.",
    )
    parser.add_argument("command", choices=["migrate", "cleanup", "grants"])
    parser.add_argument("role", nargs="?", help="grants: the app's role (its managed identity's name)")
    args = parser.parse_args(argv)
    if args.command == "grants":
        if not args.role:
            parser.error("grants needs the role name")
        role = '"' + args.role.replace('"', '""') + '"'
        print("\n".join(f"{grant.format(role=role)};" for grant in GRANTS))
        return 0

    async def run() -> str:
        store = store_factory() if store_factory else _store_from_environment()
        async with store:
            if args.command == "migrate":
                before, after = await store.migrate()
                return f"schema version {before} -> {after}" if before != after else f"schema version {after}"
            chunks, sessions = await store.cleanup()
            return f"deleted {sessions} expired session(s) and {chunks} transcript chunk(s)"

    try:
        print(asyncio.run(run()))
    except AgentServiceError as exc:
        print(f"error: {exc.detail}" + (f" ({exc.internal})" if exc.internal else ""), file=sys.stderr)
        return 1
    return 0


def _store_from_environment() -> PostgresSnapshotStore:
    from ..platform.settings import load_settings

    settings = load_settings({**os.environ, "MAF_SESSION_BACKEND": "postgres"})
    return PostgresSnapshotStore(
        settings.postgres_dsn or "",
        managed_identity_client_id=settings.azure_client_id,
        pool_size=1,
    )


if __name__ == "__main__":
    sys.exit(main())
