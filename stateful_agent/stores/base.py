"""The session store interface: MAF's ``SessionStore`` plus versioned, conditional writes.

Backends implement storage primitives for snapshot documents and transcript
chunks (see ``snapshots.py``, ``transcript.py``); this class builds MAF's
``get``/``set``/``delete`` contract on them, so the logic lives once and the
backends only store bytes.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from agent_framework import AgentSession, FileSessionStore, SessionStore

from .. import snapshots

# We build on MAF's SessionStore knowingly (pinned version, contract-tested); its notice is not news.
warnings.filterwarnings("ignore", message=r"\[SESSION_STORE\]")


@dataclass(frozen=True)
class Record:
    """A stored snapshot document and the version (ETag) it was read at."""

    document: dict[str, Any]
    etag: str


class SnapshotStore(SessionStore, ABC):
    """A MAF ``SessionStore`` whose writes can be made conditional on a version.

    ``create`` fails when the session exists and ``replace`` fails when its ETag
    moved on; both raise ``SessionConflictError`` and leave the stored document as
    the winner wrote it.
    """

    backend: ClassVar[str]

    #: Every backend takes the same ids: non-empty, at most 128 characters (MAF's file-store rule).
    validate_session_id = staticmethod(FileSessionStore.validate_session_id)

    def __init__(self, *, ttl_seconds: int | None = None, max_snapshot_bytes: int = 1_572_864) -> None:
        super().__init__()
        self.ttl_seconds = ttl_seconds
        self.max_snapshot_bytes = max_snapshot_bytes

    # -- storage primitives -------------------------------------------------

    @abstractmethod
    async def read(self, session_id: str) -> Record | None:
        """Return the stored document and its ETag, or ``None`` when absent."""

    @abstractmethod
    async def create(self, session_id: str, document: dict[str, Any]) -> str:
        """Store a new document; raise ``SessionConflictError`` if one exists. Return the ETag."""

    @abstractmethod
    async def replace(self, session_id: str, document: dict[str, Any], etag: str) -> str:
        """Replace the document if its ETag is still ``etag``, else raise ``SessionConflictError``."""

    @abstractmethod
    async def upsert(self, session_id: str, document: dict[str, Any]) -> str:
        """Store the document unconditionally. Return the ETag."""

    @abstractmethod
    async def remove(self, session_id: str) -> None:
        """Delete the snapshot, then every transcript chunk of the session; missing ones are no error."""

    @abstractmethod
    async def write_chunk(self, session_id: str, chunk_id: str, document: dict[str, Any]) -> None:
        """Store a transcript chunk under a new, unique ``chunk_id``."""

    @abstractmethod
    async def read_chunk(self, session_id: str, chunk_id: str) -> dict[str, Any] | None:
        """Return a transcript chunk, or ``None`` when absent."""

    @abstractmethod
    async def delete_chunk(self, session_id: str, chunk_id: str) -> None:
        """Delete a transcript chunk; a missing one is not an error."""

    async def ping(self) -> None:
        """Raise ``StoreUnavailableError`` when the store cannot serve requests."""

    async def close(self) -> None:
        """Release network clients and credentials."""

    # -- MAF SessionStore contract -----------------------------------------

    async def get(self, session_id: str) -> AgentSession | None:
        """Return an independent copy of the stored session, or ``None``."""
        self.validate_session_id(session_id)
        record = await self.read(session_id)
        return None if record is None else snapshots.restore(record.document, session_id)

    async def set(self, session_id: str, session: AgentSession) -> None:
        """Store a snapshot of ``session`` under ``session_id``, replacing any existing one."""
        self.validate_session_id(session_id)
        previous = await self.read(session_id)
        turns = previous.document.get("turns", 0) if previous else _user_turns(session)
        kept = {k: v for k, v in (previous.document if previous else {}).items() if k in ("transcript", "idempotency")}
        document = snapshots.build_document(
            session_id,
            session,
            previous=previous.document if previous else None,
            turns=turns,
            ttl_seconds=self.ttl_seconds,
            max_bytes=self.max_snapshot_bytes,
            extra=kept,  # the archived transcript and remembered keys stay the session's
        )
        await self.upsert(session_id, document)

    async def delete(self, session_id: str) -> None:
        """Forget the session; deleting a missing one is not an error."""
        self.validate_session_id(session_id)
        await self.remove(session_id)


def _user_turns(session: AgentSession) -> int:
    return sum(1 for message in snapshots.history(session) if message.role == "user")
