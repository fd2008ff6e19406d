"""The PostgreSQL store's schema: versioned migrations, the upkeep, and the grants the app's role needs.

Each migration takes the schema from version ``index`` to ``index + 1``; ``stateful_agent_schema`` holds the
version, and ``PostgresSnapshotStore.migrate`` applies what is missing under an advisory lock.
"""

from __future__ import annotations

import psycopg

from ..errors import ConfigurationError

SCHEMA_VERSION = 1

#: Each migration takes the schema from version ``index`` to ``index + 1``.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE SEQUENCE stateful_agent_versions;
    CREATE TABLE stateful_agent_sessions (
        owner       text COLLATE "C" NOT NULL,
        session_id  text COLLATE "C" NOT NULL,
        version     bigint NOT NULL,
        updated_at  text COLLATE "C" NOT NULL,
        expires_at  timestamptz,
        summary     json NOT NULL,
        document    json NOT NULL,
        PRIMARY KEY (owner, session_id)
    );
    CREATE INDEX stateful_agent_sessions_listing
        ON stateful_agent_sessions (owner, updated_at DESC, session_id DESC);
    CREATE INDEX stateful_agent_sessions_expiry
        ON stateful_agent_sessions (expires_at) WHERE expires_at IS NOT NULL;
    CREATE TABLE stateful_agent_transcripts (
        owner       text COLLATE "C" NOT NULL,
        session_id  text COLLATE "C" NOT NULL,
        chunk_id    text COLLATE "C" NOT NULL,
        expires_at  timestamptz,
        document    json NOT NULL,
        PRIMARY KEY (owner, session_id, chunk_id)
    );
    CREATE INDEX stateful_agent_transcripts_expiry
        ON stateful_agent_transcripts (expires_at) WHERE expires_at IS NOT NULL;
    """,
)
SCHEMA_TABLE = """
    CREATE TABLE IF NOT EXISTS stateful_agent_schema (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        version   integer NOT NULL
    )
"""
MIGRATION_LOCK = 0x5A6E7401  # pg_advisory_xact_lock key: one migrating instance at a time

#: Remove expired sessions and transcript chunks (the store's only upkeep; schedule it, e.g. with pg_cron).
CLEANUP = (
    "DELETE FROM stateful_agent_transcripts WHERE expires_at <= now()",
    "DELETE FROM stateful_agent_sessions WHERE expires_at <= now()",
)

#: What the app's own role needs once an administrator has run ``migrate``: rows, not tables.
GRANTS = (
    "GRANT SELECT, INSERT, UPDATE, DELETE ON stateful_agent_sessions, stateful_agent_transcripts TO {role}",
    "GRANT USAGE ON SEQUENCE stateful_agent_versions TO {role}",
    "GRANT SELECT ON stateful_agent_schema TO {role}",
)


async def schema_version(conn: psycopg.AsyncConnection) -> int:
    cursor = await conn.execute("SELECT version FROM stateful_agent_schema")
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


def newer_schema(version: int) -> ConfigurationError:
    return ConfigurationError(
        f"The PostgreSQL schema is at version {version}, newer than this app's {SCHEMA_VERSION}; deploy the "
        "newer app version."
    )
