"""The session store interface: MAF's ``SessionStore`` plus versioned, conditional writes.

Backends implement a few storage primitives on JSON objects (``_read``,
``_create``, ``_replace``, ...). This class builds everything else on them once:
the typed reads (every document is validated by ``documents.py`` when read),
the recognition of a write whose answer was lost, and MAF's ``get``/``set``/
``delete`` contract. Backends store and read; they never build documents.
"""

from __future__ import annotations

import logging
import warnings
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from agent_framework import AgentSession, Message, SessionStore
from pydantic import ValidationError

from ..errors import SessionConflictError, StoreUnavailableError
from ..platform import telemetry
from ..state.documents import ListingKey, SessionDocument, SessionSummary, TranscriptChunk, history

# We build on MAF's SessionStore knowingly (pinned version, contract-tested); its notice is not news.
warnings.filterwarnings("ignore", message=r"\[SESSION_STORE\]")

logger = logging.getLogger(__name__)

#: A stored JSON object and its version (ETag), as a backend reads it.
Stored = tuple[dict[str, Any], str]


@dataclass(frozen=True)
class Record:
    """A stored, validated snapshot document and the version (ETag) it was read at."""

    document: SessionDocument
    etag: str


class SnapshotStore(SessionStore, ABC):
    """A MAF ``SessionStore`` whose writes can be made conditional on a version.

    ``create`` fails when the session exists and ``replace`` fails when its ETag
    moved on; both raise ``SessionConflictError`` and leave the stored document as
    the winner wrote it. A write whose answer was lost (the store applied it, the
    reply never arrived, a retry then collided with it) is recognised by its
    ``write_id`` and reported as the success it was.
    """

    backend: ClassVar[str]

    def __init__(self, *, ttl_seconds: int | None = None, max_snapshot_bytes: int = 1_572_864) -> None:
        super().__init__()
        self.ttl_seconds = ttl_seconds
        self.max_snapshot_bytes = max_snapshot_bytes

    # -- typed operations ----------------------------------------------------
    # ``owner`` scopes every session: the same id under two owners is two sessions, and nothing of one
    # owner's is reachable with another's (``""``: no identity, AUTH_MODE=none and MAF's contract).

    async def read(self, session_id: str, owner: str = "") -> Record | None:
        """The validated document of ``owner``'s session ``session_id`` and its ETag, or ``None`` when absent.

        Raises:
            SessionCorruptError: The stored document does not match the model (or names another owner).
            StoreUnavailableError: The store cannot be reached.
        """
        with telemetry.store_operation("read", self.backend, session_id):
            stored = await self._read(owner, session_id)
            return None if stored is None else Record(SessionDocument.parse(stored[0], session_id, owner), stored[1])

    async def create(self, session_id: str, document: SessionDocument) -> str:
        """Store a new document (for ``document.owner``) and return its ETag.

        Raises:
            SessionConflictError: The session exists (and not because of this very write).
            StoreUnavailableError: The store cannot be reached, and the write is not known to have landed.
        """
        return await self._write_snapshot(
            "create", session_id, document, lambda body: self._create(document.owner, session_id, body)
        )

    async def replace(self, session_id: str, document: SessionDocument, etag: str) -> str:
        """Replace the document if its ETag is still ``etag``; return the new ETag.

        Raises:
            SessionConflictError: Another request changed or deleted the session meanwhile.
            StoreUnavailableError: The store cannot be reached, and the write is not known to have landed.
        """
        return await self._write_snapshot(
            "replace", session_id, document, lambda body: self._replace(document.owner, session_id, body, etag)
        )

    async def upsert(self, session_id: str, document: SessionDocument) -> str:
        """Store the document unconditionally; return its ETag.

        Raises:
            StoreUnavailableError: The store cannot be reached, and the write is not known to have landed.
        """
        return await self._write_snapshot(
            "upsert", session_id, document, lambda body: self._upsert(document.owner, session_id, body)
        )

    async def remove(self, session_id: str, owner: str = "") -> None:
        """Delete ``owner``'s snapshot, then every transcript chunk of it; missing ones are no error.

        Raises:
            StoreUnavailableError: The store cannot be reached.
        """
        with telemetry.store_operation("delete", self.backend, session_id):
            await self._remove(owner, session_id)

    async def write_chunk(self, session_id: str, chunk_id: str, chunk: TranscriptChunk) -> None:
        """Store a transcript chunk (for ``chunk.owner``) under a new, unique ``chunk_id``.

        Raises:
            SessionConflictError: The id is taken (by another writer).
            StoreUnavailableError: The store cannot be reached, and the write is not known to have landed.
        """
        with telemetry.store_operation("archive", self.backend, session_id):
            owner = chunk.owner

            async def write() -> str:
                await self._create_chunk(owner, session_id, chunk_id, chunk.stored())
                return ""

            async def read_back() -> Stored | None:
                stored = await self._read_chunk(owner, session_id, chunk_id)
                return None if stored is None else (stored, "")

            await self._recognised(owner, session_id, chunk.write_id, write(), read_back)

    async def read_chunk(self, session_id: str, chunk_id: str, owner: str = "") -> TranscriptChunk | None:
        """The validated transcript chunk, or ``None`` when absent.

        Raises:
            SessionCorruptError: The stored chunk does not match the model (or names another owner).
            StoreUnavailableError: The store cannot be reached.
        """
        with telemetry.store_operation("read_transcript", self.backend, session_id):
            stored = await self._read_chunk(owner, session_id, chunk_id)
            return None if stored is None else TranscriptChunk.parse(stored, session_id, owner)

    async def chunk_ids(self, session_id: str, owner: str = "") -> set[str]:
        """The ids of every transcript chunk stored for ``owner``'s session, whether its snapshot lists it or
        not (a turn that lost a race leaves an unlisted one behind, until the session is deleted).

        Raises:
            StoreUnavailableError: The store cannot be reached.
        """
        return set(await self._chunk_ids(owner, session_id))

    async def delete_chunk(self, session_id: str, chunk_id: str, owner: str = "") -> None:
        """Delete a transcript chunk; a missing one is not an error.

        Raises:
            StoreUnavailableError: The store cannot be reached.
        """
        await self._delete_chunk(owner, session_id, chunk_id)

    async def list_sessions(self, owner: str, *, limit: int, after: ListingKey | None = None) -> list[SessionSummary]:
        """``owner``'s sessions, most recently updated first, starting after ``after``; at most ``limit``.

        A stored snapshot that does not validate is left out (and logged): opening it reports it.

        Raises:
            StoreUnavailableError: The store cannot be reached.
        """
        with telemetry.store_operation("list", self.backend, ""):
            summaries = []
            for stored in await self._list(owner, limit, after):
                try:
                    summaries.append(SessionSummary.model_validate(stored))
                except ValidationError as exc:
                    logger.error("A stored session of owner %r does not list: %s", owner, exc)
            return summaries

    async def ping(self) -> None:
        """Raise ``StoreUnavailableError`` when the store cannot serve requests."""

    async def close(self) -> None:
        """Release network clients and credentials the store created."""

    @property
    def raw(self) -> RawDocuments:
        """The stored objects exactly as the backend holds them, unvalidated (for repair tools and tests)."""
        return RawDocuments(self)

    async def __aenter__(self) -> SnapshotStore:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # -- storage primitives (backends) ----------------------------------------

    @abstractmethod
    async def _read(self, owner: str, session_id: str) -> Stored | None:
        """The stored snapshot object (without backend fields) and its ETag, or ``None``."""

    @abstractmethod
    async def _create(self, owner: str, session_id: str, body: dict[str, Any]) -> str:
        """Store a new snapshot object; ``SessionConflictError`` if one exists. Return the ETag."""

    @abstractmethod
    async def _replace(self, owner: str, session_id: str, body: dict[str, Any], etag: str) -> str:
        """Replace the snapshot object if its ETag is ``etag``, else ``SessionConflictError``."""

    @abstractmethod
    async def _upsert(self, owner: str, session_id: str, body: dict[str, Any]) -> str:
        """Store the snapshot object unconditionally. Return the ETag."""

    @abstractmethod
    async def _remove(self, owner: str, session_id: str) -> None:
        """Delete the snapshot object, then every other object of the session."""

    @abstractmethod
    async def _create_chunk(self, owner: str, session_id: str, chunk_id: str, body: dict[str, Any]) -> None:
        """Store a chunk object under a new id; ``SessionConflictError`` if the id is taken."""

    @abstractmethod
    async def _read_chunk(self, owner: str, session_id: str, chunk_id: str) -> dict[str, Any] | None:
        """The stored chunk object, or ``None``."""

    @abstractmethod
    async def _delete_chunk(self, owner: str, session_id: str, chunk_id: str) -> None:
        """Delete a chunk object; a missing one is not an error."""

    @abstractmethod
    async def _chunk_ids(self, owner: str, session_id: str) -> list[str]:
        """The ids of the session's chunk objects."""

    @abstractmethod
    async def _list(self, owner: str, limit: int, after: ListingKey | None) -> list[dict[str, Any]]:
        """Up to ``limit`` of ``owner``'s snapshot objects ordered by ``(updated_at, session_id)`` descending,
        strictly after ``after``; each with at least the fields of ``SessionSummary``."""

    # -- MAF SessionStore contract ---------------------------------------------

    async def get(self, session_id: str) -> AgentSession | None:
        """Return an independent copy of the stored session, or ``None``.

        Raises:
            ValueError: ``session_id`` is not valid for this store.
            SessionCorruptError: The stored snapshot cannot be restored (also a ``ValueError``).
            StoreUnavailableError: The store cannot be reached.
        """
        self.validate_session_id(session_id)
        record = await self.read(session_id)
        return None if record is None else record.document.restore()

    async def set(self, session_id: str, session: AgentSession) -> None:
        """Store a snapshot of ``session`` under ``session_id``, replacing any existing one.

        The session's archived transcript and remembered keys stay with it.

        Raises:
            ValueError: ``session_id`` is not valid for this store, or the state holds a non-finite float.
            TypeError: ``session`` is not exactly an ``AgentSession``, or its state holds a value JSON
                cannot represent (the message names its path).
            SessionTooLargeError: The snapshot would exceed ``max_snapshot_bytes``.
            SessionCorruptError: The stored document it would replace cannot be read.
            StoreUnavailableError: The store cannot be reached.
        """
        self.validate_session_id(session_id)
        previous = await self.read(session_id)
        document = SessionDocument.build(
            session_id,
            session,
            previous=previous.document if previous else None,
            turns=previous.document.turns if previous else _user_turns(session),
            ttl_seconds=self.ttl_seconds,
            max_bytes=self.max_snapshot_bytes,
            transcript=previous.document.transcript if previous else (),
            idempotency=previous.document.idempotency if previous else (),
        )
        await self.upsert(session_id, document)

    async def delete(self, session_id: str) -> None:
        """Forget the session and its transcript; deleting a missing one is not an error.

        Raises:
            ValueError: ``session_id`` is not valid for this store.
            StoreUnavailableError: The store cannot be reached.
        """
        self.validate_session_id(session_id)
        await self.remove(session_id)

    async def _write_snapshot(
        self,
        operation: str,
        session_id: str,
        document: SessionDocument,
        write: Callable[[dict[str, Any]], Awaitable[str]],
    ) -> str:
        """One snapshot write: traced, recognised after a lost answer, its size measured."""
        with telemetry.store_operation(operation, self.backend, session_id):
            etag = await self._recognised(document.owner, session_id, document.write_id, write(document.stored()))
            telemetry.snapshot_written(document.size)
            return etag

    # -- lost answers ----------------------------------------------------------

    async def _recognised(
        self,
        owner: str,
        session_id: str,
        write_id: str | None,
        write: Awaitable[str],
        read_back: Callable[[], Awaitable[Stored | None]] | None = None,
    ) -> str:
        """Run ``write``; when it fails with a conflict or an unknown outcome, report it as done if the
        stored object carries this write's ``write_id`` (the write landed and only its answer was lost)."""
        try:
            return await write
        except (SessionConflictError, StoreUnavailableError):
            try:
                stored = await (read_back or (lambda: self._read(owner, session_id)))()
            except Exception:  # the store is still away: the outcome stays unknown
                stored = None
            if write_id is None or stored is None or stored[0].get("write_id") != write_id:
                raise
            logger.warning("A write to session %r landed although its answer was lost; recognised as ours", session_id)
            return stored[1]


def listing_order(stored: list[dict[str, Any]], limit: int, after: ListingKey | None) -> list[dict[str, Any]]:
    """For backends that list by scanning: ``limit`` objects after ``after``, newest ``updated_at`` first
    (ties by ``session_id``, descending), as Cosmos DB's indexed query orders them."""

    def key(item: dict[str, Any]) -> ListingKey:
        return (str(item.get("updated_at", "")), str(item.get("session_id", "")))

    rows = sorted((item for item in stored if after is None or key(item) < after), key=key, reverse=True)
    return rows[:limit]


def _user_turns(session: AgentSession) -> int:
    return sum(1 for message in history(session) if isinstance(message, Message) and message.role == "user")


class RawDocuments:
    """A store's objects as the backend holds them, read and written without validation.

    The app never uses it: it is the seam for repair tools and for tests that plant data the
    models would refuse (corrupt snapshots, stray chunks). Writes are unconditional.
    """

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    async def read(self, session_id: str, owner: str = "") -> Stored | None:
        """The stored snapshot object and its ETag, or ``None``.

        Raises:
            StoreUnavailableError: The store cannot be reached.
        """
        return await self._store._read(owner, session_id)

    async def write(self, session_id: str, body: dict[str, Any], owner: str = "") -> str:
        """Store ``body`` as the session's snapshot object, as it is; returns the new ETag.

        Raises:
            StoreUnavailableError: The store cannot be reached.
        """
        return await self._store._upsert(owner, session_id, body)

    async def write_chunk(self, session_id: str, chunk_id: str, body: dict[str, Any], owner: str = "") -> None:
        """Store ``body`` as a transcript chunk, as it is.

        Raises:
            SessionConflictError: A chunk with that id exists.
            StoreUnavailableError: The store cannot be reached.
        """
        await self._store._create_chunk(owner, session_id, chunk_id, body)
