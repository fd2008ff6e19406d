"""The read side: what the API shows of stored sessions. It reads; it never runs the model or writes."""

from __future__ import annotations

from dataclasses import dataclass

from agent_framework import AgentSession

from ..errors import ConfigurationError, NotReadyError, SessionNotFoundError
from ..platform.settings import Settings
from ..state.documents import history
from ..state.warm import WarmWindows
from ..stores import Record, SnapshotStore
from . import cursors, transcript
from .bodies import Approval, Health, Message, MessagePage, Session, SessionPage


@dataclass(frozen=True)
class TranscriptSlice:
    """Messages ``start``.. of a session's transcript (as ``Message`` views with their ``index``), with what a
    front door needs to place them: the session's turn count, creation time, size, waiting approvals and
    metadata."""

    session_id: str
    turns: int
    created_at: str
    total: int
    pending_approvals: list[Approval]
    messages: list[Message]
    metadata: dict[str, str]


class SessionReads:
    """Sessions as the API shows them: a summary with the live window, transcript pages, listings, health."""

    def __init__(self, settings: Settings, store: SnapshotStore, warm: WarmWindows) -> None:
        self.settings = settings
        self.store = store
        self.warm = warm

    async def load(self, session_id: str, owner: str = "") -> tuple[Record, AgentSession]:
        """``owner``'s stored session and its restored ``AgentSession``.

        Raises:
            SessionNotFoundError, SessionCorruptError, StoreUnavailableError.
        """
        record = await self.store.read(session_id, owner)
        if record is None:
            raise SessionNotFoundError(f"No session with id '{session_id}'.")
        return record, self.warm.restore(record.document)

    async def describe(self, session_id: str, *, owner: str = "") -> Session:
        """The session's summary and the user/assistant messages of its live window.

        Raises:
            SessionNotFoundError, SessionCorruptError, StoreUnavailableError.
        """
        record, session = await self.load(session_id, owner)
        document = record.document
        live = history(session)
        return Session(
            session_id=session_id,
            title=document.title,
            turns=document.turns,
            created_at=document.created_at,
            updated_at=document.updated_at,
            usage=document.usage,
            pending_approvals=[Approval(**a.public()) for a in document.approvals if a.state == "pending"],
            messages=[Message(**view) for _, view in transcript.views(live, live) if transcript.shown(view)],
        )

    async def messages(self, session_id: str, *, cursor: str | None, limit: int, owner: str = "") -> MessagePage:
        """One page of the whole transcript, oldest first, with the cursor of the next page.

        Raises:
            InvalidCursorError: ``cursor`` is not one this API returned for this session.
            SessionNotFoundError, SessionCorruptError, StoreUnavailableError.
        """
        record, session = await self.load(session_id, owner)
        live = history(session)
        total = record.document.archived_count + len(live)
        start = cursors.message_index(cursor, total)
        end = min(start + limit, total)
        page = await transcript.read_range(self.store, record.document, live, start, end)
        return MessagePage(
            session_id=session_id,
            total=total,
            messages=[Message(index=start + i, **view) for i, view in transcript.views(page, [*page, *live])],
            next_cursor=cursors.message_cursor(end) if end < total else None,
        )

    async def slice(self, session_id: str, *, start: int, limit: int, owner: str = "") -> TranscriptSlice:
        """Up to ``limit`` messages of the whole transcript from index ``start`` (clamped to its length; a
        negative ``start`` counts from its end), read with the session in one load.

        Raises:
            SessionNotFoundError, SessionCorruptError, StoreUnavailableError.
        """
        record, session = await self.load(session_id, owner)
        live = history(session)
        document = record.document
        total = document.archived_count + len(live)
        start = min(max(start if start >= 0 else total + start, 0), total)
        end = min(start + max(limit, 0), total)
        page = await transcript.read_range(self.store, document, live, start, end)
        return TranscriptSlice(
            session_id=session_id,
            turns=document.turns,
            created_at=document.created_at,
            total=total,
            pending_approvals=[Approval(**a.public()) for a in document.approvals if a.state == "pending"],
            messages=[Message(index=start + i, **view) for i, view in transcript.views(page, [*page, *live])],
            metadata=dict(document.metadata or {}),
        )

    async def list_sessions(self, *, owner: str = "", cursor: str | None, limit: int) -> SessionPage:
        """``owner``'s sessions, most recently updated first, one page, with the cursor of the next.

        Raises:
            InvalidCursorError: ``cursor`` is not one this API returned.
            StoreUnavailableError: The store cannot be reached.
        """
        after = cursors.listing_key(cursor)
        rows = await self.store.list_sessions(owner, limit=limit + 1, after=after)
        page = rows[:limit]
        return SessionPage(
            sessions=page, next_cursor=cursors.listing_cursor(page[-1].key) if len(rows) > limit else None
        )

    async def health(self) -> Health:
        """Check the store answers.

        Raises:
            NotReadyError: The store is reachable but not usable as configured (a container of another layout).
            StoreUnavailableError: The store cannot be reached.
        """
        try:
            await self.store.ping()
        except ConfigurationError as error:
            raise NotReadyError(error.detail, internal=error.internal) from error
        return Health(status="ok")
