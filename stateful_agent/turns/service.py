"""The turn pipeline: load the snapshot, run one agent turn, write it back conditionally.

``TurnService.turn`` is the one entry point: ``prepare`` reads the session (one
point read), answers a repeated ``Idempotency-Key`` from it, and moves messages
that leave the live window aside; ``claim`` claims answered approvals; the agent
runs (streamed or not); and ``_commit`` writes the archived chunk (if any) and the
new snapshot, conditional on the version read. Nothing is written unless the turn completed; a write that loses
a race raises ``SessionConflictError`` and the stored session stays exactly
the winner's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent_framework import Agent, AgentResponse, AgentSession, FunctionTool, Message

from ..errors import (
    AgentServiceError,
    ConfigurationError,
    SessionConflictError,
    SessionNotFoundError,
    StaleTurnError,
)
from ..platform import telemetry
from ..platform.models import model_failure
from ..platform.settings import Settings
from ..sessions import transcript
from ..sessions.bodies import Approval, Health, MessagePage, Session, SessionPage, Turn
from ..sessions.reads import SessionReads
from ..state.documents import RememberedKey, SessionDocument, Usage, history, set_history, stored_messages
from ..state.documents import now as clock
from ..state.warm import WarmWindows
from ..stores import Record, SnapshotStore
from . import approvals, idempotency
from .compaction import archivable_prefix, build_strategy
from .events import Accepted, Completed, TextDelta, TurnEvent, ending
from .tool_steps import ToolSteps

if TYPE_CHECKING:
    from ..platform.mcp import ToolServers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TurnResult:
    """What a completed turn returns to the client; ``replayed`` when it came from an earlier request."""

    session_id: str
    turn: int
    reply: str
    approvals: tuple[dict[str, Any], ...] = ()
    usage: Usage | None = None
    replayed: bool = False
    first: int = 0  # the transcript index of the first message the turn added (not in the response body)

    def as_json(self) -> dict[str, Any]:
        """The response body (``bodies.Turn``) as JSON."""
        return Turn(
            session_id=self.session_id,
            turn=self.turn,
            reply=self.reply,
            approvals=[Approval(**approval) for approval in self.approvals],
            usage=self.usage,
        ).as_json()


@dataclass
class PreparedTurn:
    """A loaded session, ready for the agent: what the commit needs to write it back."""

    session_id: str
    inputs: list[Message]
    record: Record | None
    session: AgentSession
    archived: list[Message]
    known: int  # messages in the live window before the agent runs
    key: str | None = None
    fingerprint: str | None = None
    owner: str = ""
    answers: tuple[approvals.Answer, ...] = ()
    resolved: tuple[str, ...] = ()  # ids of interrupted approvals this turn reports to the model
    stored: list[dict[str, Any]] = field(default_factory=list)  # stored dicts of the window's first messages
    tools: list[FunctionTool] = field(default_factory=list)  # the MCP servers' tools offered to this turn
    turn: int = 1  # the number this turn is stored under
    first: int = 0  # the transcript index of the first message the agent adds
    started: float = field(default_factory=time.perf_counter)


class TurnService:
    """Runs turns and reads sessions; one instance per process, shared by all requests."""

    def __init__(
        self,
        settings: Settings,
        store: SnapshotStore,
        agent_factory: Callable[[], Agent],
        tool_servers: ToolServers | None = None,
    ) -> None:
        self.settings = settings
        #: The MCP servers' connections (``AGENT_MCP_SERVERS``), or ``None`` when none is configured.
        self.tool_servers = tool_servers
        self._store = store
        self.strategy = build_strategy(settings)
        self._agent_factory = agent_factory
        self._agent: Agent | None = None
        self.warm = WarmWindows(settings.session_cache_bytes)
        #: The read side, sharing the store and the warm windows.
        self.sessions = SessionReads(settings, store, self.warm)

    @property
    def store(self) -> SnapshotStore:
        """The session store, shared with the read side."""
        return self._store

    @store.setter
    def store(self, store: SnapshotStore) -> None:
        self._store = self.sessions.store = store

    @property
    def agent(self) -> Agent:
        """The agent, built on the first turn (so health checks never load the model SDK).

        Raises:
            ConfigurationError: ``AGENT_TOOLS`` cannot be loaded.
        """
        if self._agent is None:
            self._agent = self._agent_factory()
        return self._agent

    async def prepare(
        self,
        session_id: str,
        message: str | None,
        key: str | None = None,
        *,
        owner: str = "",
        answers: Sequence[tuple[str, bool]] = (),
        after_turn: int | None = None,
    ) -> PreparedTurn | TurnResult:
        """Load ``owner``'s session for a turn, or the stored result of a repeated ``key``.

        Another owner's session of the same id is never touched: for this owner it does not exist. With
        ``after_turn``, the turn continues the session only if its latest stored turn is that one.

        Raises:
            SessionCorruptError: The stored session does not validate or restore.
            IdempotencyKeyReusedError: ``key`` was used with another request.
            ApprovalsPendingError, ApprovalNotPendingError: The request does not answer exactly the
                pending tool approvals.
            SessionNotFoundError, StaleTurnError: ``after_turn`` names a turn of no session, or not the latest.
            StoreUnavailableError: The store cannot be reached.
        """
        answers = [approvals.Answer(*answer) for answer in answers]
        record = await self.store.read(session_id, owner)
        session = self.warm.restore(record.document) if record else AgentSession(session_id=session_id)
        request_fingerprint = idempotency.fingerprint(message, answers) if key else None
        if key and record:
            replay = await self._replay(record, session, key, request_fingerprint)
            if replay is not None:
                return replay
        document = record.document if record else None
        if after_turn is not None:
            if document is None or document.turns < after_turn:
                raise SessionNotFoundError(f"No turn {after_turn} of a session with id '{session_id}'.")
            if document.turns != after_turn:
                raise StaleTurnError(
                    f"The conversation has moved on since turn {after_turn} (it has {document.turns}): continue "
                    "from its latest turn."
                )
        now = clock()
        approvals.check(document, answers, now)
        live = history(session)
        stored = stored_messages(document)
        lost = approvals.unresolved(document, now)
        if lost:  # tell the model, instead of running those calls again
            live = [*live, *approvals.interruption_results(lost)]
            set_history(session, live)
        inputs = approvals.inputs(live, answers, message)
        first = (document.archived_count if document else 0) + len(live) + len(inputs)
        cut = await archivable_prefix(
            live, inputs[-1], self.strategy, max_messages=self.settings.compaction_max_messages
        )
        cut = min(cut, approvals.first_request_index(live, document.approvals if document else ()))
        if cut:
            set_history(session, live[cut:])
        return PreparedTurn(
            session_id=session_id,
            inputs=inputs,
            record=record,
            session=session,
            archived=live[:cut],
            known=len(live) - cut,
            key=key,
            fingerprint=request_fingerprint,
            owner=owner,
            answers=tuple(answers),
            resolved=tuple(a.id for a in lost),
            stored=stored[cut:],
            turn=(document.turns if document else 0) + 1,
            first=first,
        )

    async def turn(
        self,
        session_id: str,
        message: str | None,
        key: str | None = None,
        *,
        owner: str = "",
        answers: Sequence[tuple[str, bool]] = (),
        stream: bool = False,
        bearer: str | None = None,
        after_turn: int | None = None,
    ) -> AsyncIterator[TurnEvent]:
        """Run one turn of ``owner``'s session ``session_id`` (created on its first turn): the one entry point
        of every front door. Yields ``Accepted`` once the request is admitted (a repeated ``key`` is answered
        from the stored turn: ``Accepted(replayed=True)``); with ``stream``, the model's text and tool steps
        as they happen; then the turn's waiting approvals and ``Completed`` with the stored result (see
        ``events``). Closing the iterator before ``Completed`` abandons the turn: nothing is stored.

        ``message`` is the user's text; ``answers`` answer pending tool approvals (one of them at least);
        ``bearer`` is the caller's validated token, for MCP servers that act as the caller (never stored);
        ``after_turn`` makes the turn continue the session only from that turn (a chain of responses).

        Raises:
            Before ``Accepted``: SessionCorruptError, IdempotencyKeyReusedError, ApprovalsPendingError,
                ApprovalNotPendingError, SessionConflictError (a lost claim), StoreUnavailableError,
                ToolServerUnavailableError, UnauthenticatedError (a required MCP server acts as the caller),
                SessionNotFoundError and StaleTurnError (``after_turn``).
            After it (nothing was stored): ModelError, ContentFilteredError, SessionConflictError,
                SessionTooLargeError, StoreUnavailableError.
        """
        admitted = await self._admit(session_id, message, key, owner, answers, bearer, after_turn)
        if isinstance(admitted, TurnResult):  # a replay: the stored turn's end
            yield Accepted(session_id, replayed=True, turn=admitted.turn, first=admitted.first)
            for event in ending(admitted):
                yield event
            return
        yield Accepted(session_id, turn=admitted.turn, first=admitted.first)
        if stream:
            async for event in self.stream_turn(admitted):
                yield event
            return
        for event in ending(await self._run(admitted)):
            yield event

    async def run_turn(
        self,
        session_id: str,
        message: str | None,
        key: str | None = None,
        *,
        owner: str = "",
        answers: Sequence[tuple[str, bool]] = (),
        bearer: str | None = None,
    ) -> TurnResult:
        """``turn`` without streaming: the stored (or replayed) result (what its ``Completed`` event carries).

        Raises:
            The errors of ``turn``.
        """
        # The steps of turn(), without its events: no generator.
        admitted = await self._admit(session_id, message, key, owner, answers, bearer, None)
        return admitted if isinstance(admitted, TurnResult) else await self._run(admitted)

    async def _admit(
        self,
        session_id: str,
        message: str | None,
        key: str | None,
        owner: str,
        answers: Sequence[tuple[str, bool]],
        bearer: str | None,
        after_turn: int | None,
    ) -> PreparedTurn | TurnResult:
        """The turn ready to run (read, checked, its tools at hand, approvals claimed), or the stored result of
        a replay. Tool servers are reached before the claim, so a server that is down leaves nothing stored."""
        admitted = await self.prepare(session_id, message, key, owner=owner, answers=answers, after_turn=after_turn)
        if isinstance(admitted, TurnResult):
            return admitted
        if self.tool_servers is not None:
            admitted.tools = await self.tool_servers.tools(
                owner=owner,
                bearer=bearer,
                local=self.local_tool_names,
                needed=approvals.approved_tools(
                    admitted.record.document if admitted.record else None, admitted.answers
                ),
            )
        return await self.claim(admitted)

    @property
    def local_tool_names(self) -> frozenset[str]:
        """The names of the agent's own tools (``AGENT_TOOLS``)."""
        tools = self.agent.default_options.get("tools") or ()
        return frozenset(str(getattr(tool, "name", "")) for tool in tools)

    async def _run(self, admitted: PreparedTurn) -> TurnResult:
        """Run an admitted turn without streaming and store it."""
        try:
            response = await self.agent.run(admitted.inputs, session=admitted.session, tools=admitted.tools or None)
        except Exception as exc:  # any model, network or tool failure: nothing is stored
            await self._give_up(admitted)
            raise model_failure(exc, self.settings, admitted.session_id) from exc
        return await self._commit(admitted, response)

    async def claim(self, prepared: PreparedTurn) -> PreparedTurn | TurnResult:
        """Claim the approvals ``prepared`` answers, before any approved tool runs (at most once).

        Raises:
            SessionConflictError: Another request answered (or changed the session) first; nothing ran.
        """
        if not prepared.answers or prepared.record is None:
            return prepared
        document = approvals.claimed(prepared.record.document, prepared.answers)
        try:
            etag = await self.store.replace(prepared.session_id, document, prepared.record.etag)
        except SessionConflictError:
            replay = await self._replay_after_conflict(prepared) if prepared.key else None
            if replay is not None:
                return replay
            raise
        prepared.record = Record(document, etag)
        return prepared

    async def stream_turn(self, prepared: PreparedTurn) -> AsyncIterator[TurnEvent]:
        """Run a prepared (and claimed) turn streaming: text deltas and tool steps as they happen, then the
        events that end the stored turn.

        Closing the iterator early (a client that disconnects) abandons the turn: nothing is stored.

        Raises:
            The errors of ``run_turn``.
        """
        stream = self.agent.run(prepared.inputs, session=prepared.session, stream=True, tools=prepared.tools or None)
        steps = ToolSteps(history(prepared.session))
        try:
            async for update in stream:
                for event in steps.feed(update):
                    yield event
                if update.text:
                    yield TextDelta(update.text)
            response = await stream.get_final_response()
            for event in steps.flush():
                yield event
        except BaseException as exc:
            await self._give_up(prepared)
            if isinstance(exc, Exception):
                raise model_failure(exc, self.settings, prepared.session_id) from exc
            raise
        for event in ending(await self._commit(prepared, response)):
            yield event

    async def start(
        self,
        session_id: str,
        *,
        owner: str = "",
        messages: Sequence[tuple[str, str]] = (),
        metadata: dict[str, str] | None = None,
    ) -> SessionDocument:
        """Store a new session of ``owner`` before its first turn: with ``messages`` (``(role, text)`` of user and
        assistant messages) as its history, and its ``metadata``; no model is called. Its first turn continues it.

        Raises:
            SessionConflictError: The session exists.
            SessionTooLargeError: The messages do not fit ``MAX_SNAPSHOT_BYTES``.
            StoreUnavailableError: The store cannot be reached, and the write is not known to have landed.
        """
        session = AgentSession(session_id=session_id)
        set_history(session, _text_messages(messages))
        document = SessionDocument.build(
            session_id,
            session,
            owner=owner,
            previous=None,
            turns=0,
            ttl_seconds=self.settings.session_ttl_seconds,
            max_bytes=self.settings.max_snapshot_bytes,
            metadata=metadata,
        )
        await self.store.create(session_id, document)
        return document

    async def append(self, session_id: str, messages: Sequence[tuple[str, str]], *, owner: str = "") -> int:
        """Add user and assistant ``messages`` (``(role, text)``) to the end of ``owner``'s session without running
        a turn (the next turn's model sees them); return the transcript index of the first. Conditional on the
        version read: a turn or another append that lands first wins, and nothing of this one is stored.

        Raises:
            SessionNotFoundError: The session does not exist.
            ApprovalsPendingError: Tool calls wait for approval: they are answered first.
            SessionConflictError: The session changed meanwhile.
            SessionTooLargeError, SessionCorruptError, StoreUnavailableError.
        """
        record, session = await self.sessions.load(session_id, owner)
        document = record.document
        approvals.check(document, (), clock())
        live = history(session)
        set_history(session, [*live, *_text_messages(messages)])
        following = SessionDocument.build(
            session_id,
            session,
            owner=owner,
            previous=document,
            turns=document.turns,
            ttl_seconds=self.settings.session_ttl_seconds,
            max_bytes=self.settings.max_snapshot_bytes,
            transcript=document.transcript,
            idempotency=document.idempotency,
            usage=document.usage,
            approvals=document.approvals,
            stored_messages=stored_messages(document),
        )
        await self.store.replace(session_id, following, record.etag)
        self.warm.keep(following, history(session), len(live))
        return document.archived_count + len(live)

    async def set_metadata(self, session_id: str, metadata: dict[str, str], *, owner: str = "") -> SessionDocument:
        """Replace the metadata of ``owner``'s session (conditional on the version read; nothing else changes).

        Raises:
            SessionNotFoundError: It does not exist.
            SessionConflictError: Another request changed it meanwhile.
            SessionCorruptError, StoreUnavailableError.
        """
        record = await self.store.read(session_id, owner)
        if record is None:
            raise SessionNotFoundError(f"No session with id '{session_id}'.")
        document = record.document.revised(metadata=metadata or None)
        await self.store.replace(session_id, document, record.etag)  # the messages, and so a warm window, stay
        return document

    async def describe(self, session_id: str, *, owner: str = "") -> Session:
        """See ``SessionReads.describe``."""
        return await self.sessions.describe(session_id, owner=owner)

    async def messages(self, session_id: str, *, cursor: str | None, limit: int, owner: str = "") -> MessagePage:
        """See ``SessionReads.messages``."""
        return await self.sessions.messages(session_id, cursor=cursor, limit=limit, owner=owner)

    async def list_sessions(self, *, owner: str = "", cursor: str | None, limit: int) -> SessionPage:
        """See ``SessionReads.list_sessions``."""
        return await self.sessions.list_sessions(owner=owner, cursor=cursor, limit=limit)

    async def health(self) -> Health:
        """See ``SessionReads.health``."""
        return await self.sessions.health()

    async def delete(self, session_id: str, *, owner: str = "") -> None:
        """Delete ``owner``'s session and its transcript; a missing (or corrupt) one succeeds, and another
        owner's session of the same id is untouched.

        Raises:
            StoreUnavailableError: The store cannot be reached.
        """
        self.warm.forget(owner, session_id)
        await self.store.remove(session_id, owner)

    async def close(self) -> None:
        """Close the store's clients and the MCP servers' connections this service opened."""
        try:
            if self.tool_servers is not None:
                await self.tool_servers.close()
        finally:
            await self.store.close()

    async def _commit(self, prepared: PreparedTurn, response: AgentResponse) -> TurnResult:
        """Write the archived chunk, then the snapshot, conditional on the version read (or claimed)."""
        session_id, record = prepared.session_id, prepared.record
        previous = record.document if record else None
        live = history(prepared.session)
        if len(live) < prepared.known + len(prepared.inputs) + 1:
            raise ConfigurationError("The agent did not record the turn in the session (history provider missing).")

        listed = list(previous.transcript if previous else ())
        chunk_id = chunk = None
        if prepared.archived:
            ref, chunk_id, chunk = transcript.new_chunk(
                session_id, len(listed), prepared.archived, self.settings.session_ttl_seconds, prepared.owner
            )
            listed.append(ref)
        turn = (previous.turns if previous else 0) + 1
        usage = Usage.of(response.usage_details)
        answered = {a.id for a in prepared.answers} | set(prepared.resolved)
        pending = [
            *(a for a in (previous.approvals if previous else ()) if a.id not in answered),
            *approvals.requested(response.user_input_requests),
        ]
        remembered = previous.idempotency if previous else ()
        if prepared.key and prepared.fingerprint:
            replies = len(live) - prepared.known - len(prepared.inputs)  # what the turn added after the request
            entry = RememberedKey.model_construct(
                key=prepared.key,
                fingerprint=prepared.fingerprint,
                turn=turn,
                first=prepared.first,
                count=replies,
                usage=usage,
            )
            remembered = idempotency.remember(previous, entry, self.settings.idempotency_keys)
        try:
            document = SessionDocument.build(
                session_id,
                prepared.session,
                owner=prepared.owner,
                previous=previous,
                turns=turn,
                ttl_seconds=self.settings.session_ttl_seconds,
                max_bytes=self.settings.max_snapshot_bytes,
                transcript=listed,
                idempotency=remembered,
                usage=(previous.usage + usage) if previous and previous.usage else usage,
                approvals=pending,
                stored_messages=prepared.stored,
            )
        except BaseException:
            await self._give_up(prepared)
            raise

        try:
            if chunk_id and chunk:
                await self.store.write_chunk(session_id, chunk_id, chunk)
            if record is None:
                await self.store.create(session_id, document)
            else:
                await self.store.replace(session_id, document, record.etag)
        except BaseException as error:
            if chunk_id:
                await self._discard_chunk(session_id, chunk_id, prepared.owner)
            await self._give_up(prepared)
            if isinstance(error, AgentServiceError) and error.status == 409 and prepared.key:
                replay = await self._replay_after_conflict(prepared)
                if replay is not None:
                    return replay
            raise
        self.warm.keep(document, live, len(prepared.stored))
        telemetry.turn_stored(
            turn=turn, window=len(live), archived=len(prepared.archived), snapshot_bytes=document.size
        )
        logger.info(
            "Stored turn %d of session %r in %.0f ms (%d message(s) archived, %d approval(s) pending, usage %s)",
            turn,
            session_id,
            (time.perf_counter() - prepared.started) * 1000,
            len(prepared.archived),
            len([a for a in pending if a.state == "pending"]),
            usage.model_dump() if usage else "not reported",
        )
        requested = tuple(a.public() for a in approvals.requested(response.user_input_requests))
        return TurnResult(
            session_id=session_id,
            turn=turn,
            reply=response.text,
            approvals=requested,
            usage=usage,
            first=prepared.first,
        )

    async def _give_up(self, prepared: PreparedTurn) -> None:
        """After a failed turn that had claimed approvals: mark them interrupted (best effort; a claim that
        stays also counts as interrupted once stale). The tools may have run, so they never run again."""
        if not prepared.answers or prepared.record is None:
            return
        if not any(a.state == "claimed" for a in prepared.record.document.approvals):
            return
        try:
            document = approvals.interrupted(prepared.record.document)
            await self.store.replace(prepared.session_id, document, prepared.record.etag)
        except Exception as exc:
            logger.warning("Could not mark the claimed approvals of %r interrupted: %s", prepared.session_id, exc)

    async def _replay(
        self, record: Record, session: AgentSession, key: str, request_fingerprint: str | None
    ) -> TurnResult | None:
        entry = idempotency.find(record.document, key, request_fingerprint or "")
        if entry is None:
            return None
        end = entry.first + entry.count
        messages = await transcript.read_range(self.store, record.document, history(session), entry.first, end)
        replayed = AgentResponse(messages=messages)
        requested = tuple(a.public() for a in approvals.requested(replayed.user_input_requests))
        logger.info(
            "Replayed turn %d of session %r for a repeated Idempotency-Key", entry.turn, record.document.session_id
        )
        return TurnResult(
            session_id=record.document.session_id,
            turn=entry.turn,
            reply=replayed.text,
            approvals=requested,
            usage=entry.usage,
            replayed=True,
            first=entry.first,
        )

    async def _replay_after_conflict(self, prepared: PreparedTurn) -> TurnResult | None:
        """The same request with the same key won the race: answer with its result."""
        record = await self.store.read(prepared.session_id, prepared.owner)
        if record is None or prepared.key is None:
            return None
        return await self._replay(record, self.warm.restore(record.document), prepared.key, prepared.fingerprint)

    async def _discard_chunk(self, session_id: str, chunk_id: str, owner: str) -> None:
        """Best effort: an unlisted chunk is invisible anyway, and removed with the session."""
        try:
            await self.store.delete_chunk(session_id, chunk_id, owner)
        except Exception as exc:
            logger.warning("Could not remove unused transcript chunk %s of %r: %s", chunk_id, session_id, exc)


def _text_messages(messages: Sequence[tuple[str, str]]) -> list[Message]:
    """``(role, text)`` pairs as MAF messages."""
    return [Message(role=role, contents=[text]) for role, text in messages]


async def completed(events: AsyncIterator[TurnEvent]) -> TurnResult:
    """The result of a turn's events: what a front door that does not stream answers with.

    Raises:
        The errors of ``TurnService.turn``.
    """
    result = None
    async for event in events:  # to the end: a generator left open would be closed later, by the event loop
        if isinstance(event, Completed):
            result = event.result
    if result is None:
        raise RuntimeError("the turn ended without completing")  # turn() always ends with Completed or raises
    return result
