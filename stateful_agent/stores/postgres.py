"""PostgreSQL store: one row per session, written conditionally on its version; chunks in their own table.

A turn costs one point read (``SELECT`` by primary key) and one conditional write: ``INSERT ... ON
CONFLICT`` for a new session, ``UPDATE ... WHERE version = <the version read>`` for an existing one; a
turn that archives messages adds one chunk ``INSERT``. Every statement runs alone in autocommit mode (one
round trip each) with bound parameters only. Versions come from one sequence, so a version is never
reused, not even by a session deleted and created again.

Documents are stored as ``json`` (their exact text), not ``jsonb``: ``jsonb`` refuses ``\\u0000`` and
unpaired surrogates, which a conversation may hold. The listing reads small ``summary`` and ``updated_at``
columns, served by an index on ``(owner, updated_at, session_id)``, never the documents. There is no native
TTL: an expired row reads as absent and is removed by ``cleanup`` (``python -m stateful_agent.stores.postgres
cleanup``, or the statements in ``CLEANUP``).

The connection pool (psycopg 3) is created once per process on first use, from a libpq connection string
or the ``PG*`` environment variables. With no password and a host of Azure Database for PostgreSQL, each new
connection signs in with a Microsoft Entra token of the app's managed identity.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any, Literal

import psycopg
from agent_framework import SecretString, SessionStore
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Json
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..errors import AgentServiceError, ConfigurationError, SessionConflictError, StoreUnavailableError
from ..state.documents import ListingKey
from ..state.jsontext import encode_json
from .base import SnapshotStore, Stored
from .postgres_schema import (
    CLEANUP,
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_TABLE,
    SCHEMA_VERSION,
    newer_schema,
    schema_version,
)

logger = logging.getLogger(__name__)

#: The schema version this code reads and writes; ``migrate`` brings a database up to it.
#: The longest session id, in UTF-8 bytes (as on Cosmos DB); the primary key index holds it with the owner.
MAX_SESSION_ID_BYTES = 1024
#: The scope of Microsoft Entra tokens for Azure Database for PostgreSQL.
ENTRA_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
#: Host name suffixes of Azure Database for PostgreSQL (public and sovereign clouds).
AZURE_HOST_SUFFIXES = (
    ".postgres.database.azure.com",
    ".postgres.database.usgovcloudapi.net",
    ".postgres.database.chinacloudapi.cn",
)

_LIVE = "(expires_at IS NULL OR expires_at > now())"
_EXPIRY = "CASE WHEN %(ttl)s::integer IS NULL THEN NULL ELSE now() + make_interval(secs => %(ttl)s::integer) END"
_COLUMNS = "owner, session_id, version, updated_at, expires_at, summary, document"
_VALUES = (
    f"%(owner)s, %(session_id)s, nextval('stateful_agent_versions'), %(updated_at)s, {_EXPIRY}, "
    "%(summary)s, %(document)s"
)
_SET = (
    "version = EXCLUDED.version, updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at, "
    "summary = EXCLUDED.summary, document = EXCLUDED.document"
)
_READ = f"SELECT document, version FROM stateful_agent_sessions WHERE owner = %s AND session_id = %s AND {_LIVE}"
_CREATE = (
    f"INSERT INTO stateful_agent_sessions AS s ({_COLUMNS}) VALUES ({_VALUES}) "
    f"ON CONFLICT (owner, session_id) DO UPDATE SET {_SET} WHERE s.expires_at <= now() RETURNING version"
)
_REPLACE = (
    "UPDATE stateful_agent_sessions SET version = nextval('stateful_agent_versions'), "
    f"updated_at = %(updated_at)s, expires_at = {_EXPIRY}, summary = %(summary)s, document = %(document)s "
    f"WHERE owner = %(owner)s AND session_id = %(session_id)s AND version = %(version)s AND {_LIVE} "
    "RETURNING version"
)
_UPSERT = (
    f"INSERT INTO stateful_agent_sessions ({_COLUMNS}) VALUES ({_VALUES}) "
    f"ON CONFLICT (owner, session_id) DO UPDATE SET {_SET} RETURNING version"
)
_REMOVE = (
    "WITH chunks AS (DELETE FROM stateful_agent_transcripts WHERE owner = %(owner)s AND session_id = %(session_id)s) "
    "DELETE FROM stateful_agent_sessions WHERE owner = %(owner)s AND session_id = %(session_id)s"
)
_CREATE_CHUNK = (
    "INSERT INTO stateful_agent_transcripts (owner, session_id, chunk_id, expires_at, document) "
    f"VALUES (%(owner)s, %(session_id)s, %(chunk_id)s, {_EXPIRY}, %(document)s) "
    "ON CONFLICT DO NOTHING RETURNING 1"
)
_READ_CHUNK = (
    "SELECT document FROM stateful_agent_transcripts "
    f"WHERE owner = %s AND session_id = %s AND chunk_id = %s AND {_LIVE}"
)
_DELETE_CHUNK = "DELETE FROM stateful_agent_transcripts WHERE owner = %s AND session_id = %s AND chunk_id = %s"
_CHUNK_IDS = "SELECT chunk_id FROM stateful_agent_transcripts WHERE owner = %s AND session_id = %s"
_LIST = (
    "SELECT session_id, summary FROM stateful_agent_sessions WHERE owner = %(owner)s AND {live}{after} "
    "ORDER BY updated_at DESC, session_id DESC LIMIT %(limit)s"
)
_AFTER = " AND (updated_at, session_id) < (%(updated_at)s, %(session_id)s)"
#: The document fields a listing shows (``SessionSummary``), kept beside the document.
_SUMMARY_FIELDS = ("title", "turns", "created_at", "updated_at")

#: SQLSTATEs of a connection that failed or was shut down: the statement may be retried on a new one.
_CONNECTION_LOST = ("08", "57P01", "57P02", "57P03")

Fetch = Literal["one", "all", "count"]


class PostgresSnapshotStore(SnapshotStore):
    """Snapshot rows in PostgreSQL, versioned by a sequence; transcript chunks in their own table.

    Like ``CosmosSnapshotStore``, it either builds its connection pool from a connection string (and closes
    it), or uses a ``pool`` the caller created, opened and owns. It is an async context manager.
    """

    backend = "postgres"

    def __init__(
        self,
        conninfo: str | SecretString = "",
        *,
        pool: AsyncConnectionPool | None = None,
        credential: Any = None,
        managed_identity_client_id: str | None = None,
        create_schema: bool = False,
        pool_size: int = 5,
        timeout_seconds: float = 5.0,
        **options: Any,
    ) -> None:
        """Configure the store; nothing connects until the first request.

        ``conninfo`` is a libpq connection string or URI; what it leaves out comes from the ``PG*``
        environment variables, as with ``psql``. ``credential`` (an async Azure token credential) signs
        each new connection in with a Microsoft Entra token; without one, ``DefaultAzureCredential`` is
        used when no password is configured and the host is Azure Database for PostgreSQL.

        Raises:
            ValueError: ``conninfo`` is not a valid connection string.
        """
        super().__init__(**options)
        self._conninfo = conninfo if isinstance(conninfo, SecretString) else SecretString(conninfo)
        try:
            params = conninfo_to_dict(self._conninfo.get_secret_value())
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"POSTGRES_DSN is not a valid libpq connection string: {exc}") from None
        self.host = str(params.get("host") or os.environ.get("PGHOST") or "")
        password = params.get("password") or os.environ.get("PGPASSWORD") or os.environ.get("PGPASSFILE")
        self.uses_entra = credential is not None or (not password and self.host.lower().endswith(AZURE_HOST_SUFFIXES))
        """Whether connections sign in with an Entra token (no password, and an Azure host or a credential)."""
        self._credential = credential
        self._owns_credential = credential is None
        self._client_id = managed_identity_client_id
        #: Create or upgrade the schema on first use (local servers); otherwise ``migrate`` does, once per release.
        self.create_schema = create_schema
        self._pool = pool
        self._owns_pool = pool is None
        self._pool_size = pool_size
        self._timeout = timeout_seconds
        self._ready = False
        self._open_lock = asyncio.Lock()

    @staticmethod
    def validate_session_id(session_id: str) -> None:
        """Any non-empty text PostgreSQL can hold, up to ``MAX_SESSION_ID_BYTES`` in UTF-8.

        Raises:
            ValueError: The id is empty, holds NUL or an unpaired surrogate, or is too long.
        """
        SessionStore.validate_session_id(session_id)
        try:
            size = len(session_id.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError("session_id must be valid Unicode text (no unpaired surrogates)") from None
        if "\x00" in session_id:
            raise ValueError("session_id must not contain NUL characters")
        if size > MAX_SESSION_ID_BYTES:
            raise ValueError(f"session_id must be at most {MAX_SESSION_ID_BYTES} bytes in UTF-8")

    # -- storage primitives ----------------------------------------------------

    async def _read(self, owner: str, session_id: str) -> Stored | None:
        row = await self._run(session_id, _READ, (owner, session_id), "one")
        return None if row is None else (row[0], str(row[1]))

    async def _create(self, owner: str, session_id: str, body: dict[str, Any]) -> str:
        row = await self._run(session_id, _CREATE, _row(owner, session_id, body), "one")
        if row is None:
            raise SessionConflictError(f"Session '{session_id}' was created by another request.")
        return str(row[0])

    async def _replace(self, owner: str, session_id: str, body: dict[str, Any], etag: str) -> str:
        if not etag.isdigit():
            raise SessionConflictError(f"Session '{session_id}' was changed by another request.")
        params = {**_row(owner, session_id, body), "version": int(etag)}
        row = await self._run(session_id, _REPLACE, params, "one")
        if row is None:  # another version, deleted, or expired meanwhile
            raise SessionConflictError(f"Session '{session_id}' was changed by another request.")
        return str(row[0])

    async def _upsert(self, owner: str, session_id: str, body: dict[str, Any]) -> str:
        row = await self._run(session_id, _UPSERT, _row(owner, session_id, body), "one")
        assert row is not None  # an upsert always returns its row
        return str(row[0])

    async def _remove(self, owner: str, session_id: str) -> None:
        await self._run(session_id, _REMOVE, {"owner": owner, "session_id": session_id}, "count")

    async def _create_chunk(self, owner: str, session_id: str, chunk_id: str, body: dict[str, Any]) -> None:
        params = {
            "owner": owner,
            "session_id": session_id,
            "chunk_id": chunk_id,
            "ttl": _ttl(body),
            "document": _json(body),
        }
        if await self._run(session_id, _CREATE_CHUNK, params, "one") is None:
            raise SessionConflictError(f"Transcript chunk {chunk_id} of session '{session_id}' exists.")

    async def _read_chunk(self, owner: str, session_id: str, chunk_id: str) -> dict[str, Any] | None:
        row = await self._run(session_id, _READ_CHUNK, (owner, session_id, chunk_id), "one")
        return None if row is None else row[0]

    async def _delete_chunk(self, owner: str, session_id: str, chunk_id: str) -> None:
        await self._run(session_id, _DELETE_CHUNK, (owner, session_id, chunk_id), "count")

    async def _chunk_ids(self, owner: str, session_id: str) -> list[str]:
        return [row[0] for row in await self._run(session_id, _CHUNK_IDS, (owner, session_id), "all")]

    async def _list(self, owner: str, limit: int, after: ListingKey | None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"owner": owner, "limit": limit}
        if after is not None:
            params |= {"updated_at": after[0], "session_id": after[1]}
        query = _LIST.format(live=_LIVE, after=_AFTER if after is not None else "")
        rows = await self._run(None, query, params, "all")
        return [{**(summary if isinstance(summary, dict) else {}), "session_id": sid} for sid, summary in rows]

    async def ping(self) -> None:
        await self._run(None, "SELECT 1", (), "one")

    async def cleanup(self) -> tuple[int, int]:
        """Delete expired transcript chunks and sessions; return how many of each.

        Raises:
            StoreUnavailableError: The store cannot be reached.
            ConfigurationError: The schema is missing or the role may not delete.
        """
        chunks = await self._run(None, CLEANUP[0], (), "count")
        sessions = await self._run(None, CLEANUP[1], (), "count")
        return chunks, sessions

    async def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema to ``SCHEMA_VERSION``, under a lock; return (before, after).

        Raises:
            StoreUnavailableError: The store cannot be reached.
            ConfigurationError: The role may not create tables, or the schema is newer than this code.
        """
        pool = await self._open_pool()
        try:
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                await conn.execute(SCHEMA_TABLE)
                before = await schema_version(conn)
                if before > SCHEMA_VERSION:
                    raise newer_schema(before)
                for migration in MIGRATIONS[before:]:
                    await conn.execute(migration)
                await conn.execute(
                    "INSERT INTO stateful_agent_schema (version) VALUES (%s) "
                    "ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version",
                    (SCHEMA_VERSION,),
                )
        except PoolTimeout as exc:
            raise _unavailable(exc, None) from exc
        except psycopg.Error as exc:
            raise _store_error(exc, None) from exc
        self._ready = True
        return before, SCHEMA_VERSION

    @property
    def pool(self) -> AsyncConnectionPool | None:
        """The connection pool, once opened (it is opened once per process, on first use)."""
        return self._pool

    async def close(self) -> None:
        """Close the pool and credential this store created; an injected pool stays open."""
        if self._owns_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._owns_credential and self._credential is not None:
            await self._credential.close()
            self._credential = None
        self._ready = False

    # -- connections -----------------------------------------------------------

    async def _run(self, session_id: str | None, query: str, params: Any, fetch: Fetch) -> Any:
        """One statement on a pooled connection; retried once on a new connection when the one it got had
        been lost (a server restart leaves every pooled connection dead), as the Cosmos SDK retries a request
        after a lost connection. A retried write that had landed is recognised by the base class."""
        pool = await self._open()
        for attempt in (1, 2):
            try:
                async with pool.connection() as conn:
                    cursor = await conn.execute(query, params)
                    if fetch == "one":
                        return await cursor.fetchone()
                    if fetch == "all":
                        return await cursor.fetchall()
                    return cursor.rowcount
            except PoolTimeout as exc:  # no connection within the timeout: the server is away or saturated
                raise _unavailable(exc, session_id) from exc
            except psycopg.Error as exc:
                if attempt == 1 and _connection_lost(exc):
                    logger.info("A pooled PostgreSQL connection was lost (%s); retrying on a new one", exc)
                    await pool.check()
                    continue
                raise _store_error(exc, session_id) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _open(self) -> AsyncConnectionPool:
        """The pool, opened once per process on first use, with the schema checked (or created)."""
        if self._ready and self._pool is not None:
            return self._pool
        async with self._open_lock:
            if not self._ready:
                if self.create_schema:
                    await self.migrate()
                else:
                    await self._check_schema()
        assert self._pool is not None
        return self._pool

    async def _open_pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            self._pool = AsyncConnectionPool(
                self._conninfo.get_secret_value(),
                kwargs=self._connection_kwargs,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._timeout,
                # Give up reconnecting after one request's wait, not psycopg's 5 minutes: its back-off doubles
                # up to minutes, so a server back from a long outage would wait that long for a connection.
                # After giving up, the next request that finds no connection connects again at once.
                reconnect_timeout=self._timeout,
                open=False,
                name="stateful-agent",
            )
            await self._pool.open(wait=False)
        return self._pool

    async def _check_schema(self) -> None:
        pool = await self._open_pool()
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute("SELECT to_regclass('stateful_agent_schema') IS NOT NULL")
                row = await cursor.fetchone()
                version = await schema_version(conn) if row and row[0] else 0
        except PoolTimeout as exc:
            raise _unavailable(exc, None) from exc
        except psycopg.Error as exc:
            raise _store_error(exc, None) from exc
        if version > SCHEMA_VERSION:
            raise newer_schema(version)
        if version < SCHEMA_VERSION:
            raise ConfigurationError(
                f"The PostgreSQL schema is at version {version}; this app needs version {SCHEMA_VERSION}. Run "
                "`python -m stateful_agent.stores.postgres migrate`, or set POSTGRES_CREATE_SCHEMA=true once."
            )
        self._ready = True

    async def _connection_kwargs(self) -> dict[str, Any]:
        """Options of each new pooled connection: autocommit, and a fresh Entra token as the password."""
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": "stateful-agent"}
        if self.uses_entra:
            if self._credential is None:
                from azure.identity.aio import DefaultAzureCredential

                self._credential = DefaultAzureCredential(managed_identity_client_id=self._client_id)
            token = await self._credential.get_token(ENTRA_SCOPE)  # cached, renewed before it expires
            kwargs["password"] = token.token
        return kwargs


def _row(owner: str, session_id: str, body: dict[str, Any]) -> dict[str, Any]:
    updated_at = body.get("updated_at")
    return {
        "owner": owner,
        "session_id": session_id,
        "updated_at": updated_at if isinstance(updated_at, str) else "",
        "ttl": _ttl(body),
        "summary": _json({key: body[key] for key in _SUMMARY_FIELDS if key in body}),
        "document": _json(body),
    }


def _ttl(body: dict[str, Any]) -> int | None:
    ttl = body.get("ttl")
    return ttl if type(ttl) is int and 0 < ttl < 2**31 else None


def _json(value: Any) -> Json:
    """A ``json`` parameter, written by the app's strict encoder (lone surrogates kept as escapes)."""
    return Json(value, dumps=_dumps)


def _dumps(value: Any) -> str:
    return encode_json(value).decode("utf-8")


def _connection_lost(exc: psycopg.Error) -> bool:
    if isinstance(exc, psycopg.InterfaceError):
        return True
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith(_CONNECTION_LOST[0]) or state in _CONNECTION_LOST[1:]


def _unavailable(exc: BaseException, session_id: str | None) -> StoreUnavailableError:
    return StoreUnavailableError(
        "The session store is unavailable; retry later.",
        internal=f"PostgreSQL unavailable (session {session_id!r}): {exc}",
    )


def _store_error(exc: psycopg.Error, session_id: str | None) -> AgentServiceError:
    """Log a PostgreSQL failure with its details; return the error a client may see."""
    internal = f"PostgreSQL request failed (session {session_id!r}, SQLSTATE {exc.sqlstate}): {exc}"
    if isinstance(exc, pg_errors.UndefinedTable | pg_errors.UndefinedColumn | pg_errors.UndefinedObject):
        return ConfigurationError(
            "The PostgreSQL schema is missing or older than this app. Run "
            "`python -m stateful_agent.stores.postgres migrate`, or set POSTGRES_CREATE_SCHEMA=true once.",
            internal=internal,
        )
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return ConfigurationError(
            "The PostgreSQL role may not use the session tables: grant them "
            "(`python -m stateful_agent.stores.postgres grants <role>` prints the statements; docs/deployment.md).",
            internal=internal,
        )
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) or _connection_lost(exc):
        busy = exc.sqlstate in ("53300", "53400", "57014")  # too many connections, limits, cancelled
        return StoreUnavailableError(
            f"The session store is {'busy' if busy else 'unavailable'}; retry later.", internal=internal
        )
    return AgentServiceError("The session store failed unexpectedly.", internal=internal, unexpected=exc)


if __name__ == "__main__":  # python -m stateful_agent.stores.postgres: the command line
    from .postgres_cli import main

    sys.exit(main())
