"""The stored data: one typed model per document, validated whenever a document is read.

A session is one ``SessionDocument`` (the snapshot of its live window, the list of
its archived transcript chunks, its remembered ``Idempotency-Key`` turns) plus
zero or more ``TranscriptChunk`` documents in the same partition. Every backend
stores exactly these, as JSON::

    {"session_id", "kind": "snapshot", "schema_version": 1, "turns", "created_at", "updated_at",
     "write_id", "ttl" (only when SESSION_TTL_SECONDS is set), "title", "usage", "metadata" (when set),
     "transcript": [[nonce, count], ...], "idempotency": [{"key", "fingerprint", "turn", "first", "count"}],
     "snapshot": <AgentSession.to_dict() of the live window, unmodified>}

``write_id`` is new for every write, so a writer whose answer was lost can read the
document back and recognise its own write. A document that does not match the
model, or whose snapshot cannot be restored, raises ``SessionCorruptError``:
it is never half-used and never written forward.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from agent_framework import AgentSession, InMemoryHistoryProvider, Message
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StringConstraints, ValidationError, field_validator

from ..errors import SessionCorruptError, SessionTooLargeError
from .jsontext import encode_json

SCHEMA_VERSION = 1
HISTORY_SOURCE_ID = InMemoryHistoryProvider.DEFAULT_SOURCE_ID

logger = logging.getLogger(__name__)

_Count = Annotated[int, Field(strict=True, ge=0)]
_Text = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=1024)]
_Nonce = Annotated[str, StringConstraints(strict=True, pattern=r"^[0-9a-f]{8}$")]
_WriteId = Annotated[str, StringConstraints(strict=True, pattern=r"^[0-9a-f]{32}$")]
_Ttl = Annotated[int, Field(strict=True, ge=1)]
_Owner = Annotated[str, StringConstraints(strict=True, max_length=330)]
TITLE_CHARS = 80
#: A session's metadata: at most 16 pairs, keys up to 64 characters and values up to 512 (OpenAI's limits).
Metadata = Annotated[
    dict[Annotated[str, StringConstraints(max_length=64)], Annotated[str, StringConstraints(max_length=512)]],
    Field(max_length=16),
]


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _StoredDocument(_Document):
    """A document stored in a session's partition, with the session's owner (``""``: no identity)."""

    owner: _Owner = ""
    session_id: _Text

    @classmethod
    def parse(cls, stored: Any, session_id: str, owner: str = "") -> Self:
        """Validate a stored document of ``owner``'s session ``session_id``.

        The owner is checked on every read, behind the storage key that already holds it.

        Raises:
            SessionCorruptError: It does not match the model, or belongs to another session or owner.
        """
        try:
            document = cls.model_validate(stored)
            if document.session_id != session_id or document.owner != owner:
                raise ValueError(f"the {cls.__name__} belongs to another session or owner")
        except (ValidationError, ValueError, TypeError) as exc:
            raise _corrupt(session_id, exc) from exc
        return document


class ChunkRef(_Document):
    """One archived transcript chunk as the snapshot lists it (stored as ``[nonce, count]``)."""

    nonce: _Nonce
    count: Annotated[int, Field(strict=True, ge=1)]


class Usage(_Document):
    """Tokens a turn (or a whole session) cost, as the model reported them."""

    input_tokens: _Count = 0
    output_tokens: _Count = 0
    total_tokens: _Count = 0

    @classmethod
    def of(cls, details: Mapping[str, Any] | None) -> Usage | None:
        """MAF's usage details in our shape, or ``None`` when the model reported none."""
        if not details:
            return None
        numbers = {key: value for key, value in details.items() if isinstance(value, int) and value >= 0}
        inputs, outputs = numbers.get("input_token_count", 0), numbers.get("output_token_count", 0)
        return cls(
            input_tokens=inputs, output_tokens=outputs, total_tokens=numbers.get("total_token_count", inputs + outputs)
        )

    def __add__(self, other: Usage | None) -> Usage:
        if other is None:
            return self
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


class PendingApproval(_Document):
    """A tool call that waits for a person's answer, as the session stores it.

    ``pending`` until answered; ``claimed`` while the request that answered it runs the approved tools (so
    a second answer can never run them again); ``interrupted`` when that request failed after claiming, so
    whether the tool ran is unknown: the next turn tells the model so and never runs it again.
    """

    id: _Text
    call_id: _Text
    name: _Text
    arguments: dict[str, Any] = Field(default_factory=dict)
    state: Literal["pending", "claimed", "interrupted"] = "pending"
    claimed_at: _Text | None = None

    def public(self) -> dict[str, Any]:
        """What a client sees: ``{"id", "name", "arguments"}``."""
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


class RememberedKey(_Document):
    """A recent ``Idempotency-Key``: its turn, where the turn's reply sits in the transcript, and its usage."""

    key: Annotated[str, StringConstraints(strict=True, pattern=r"^[\x21-\x7e]{1,128}$")]
    fingerprint: _Text
    turn: Annotated[int, Field(strict=True, ge=1)]
    first: _Count
    count: _Count
    usage: Usage | None = None


class SessionDocument(_StoredDocument):
    """The stored snapshot of one session."""

    kind: Literal["snapshot"] = "snapshot"
    schema_version: Literal[1] = SCHEMA_VERSION
    turns: _Count
    created_at: _Text
    updated_at: _Text
    write_id: _WriteId | None = None  # absent in documents written before write ids existed
    ttl: _Ttl | None = None
    title: Annotated[str, StringConstraints(strict=True, max_length=TITLE_CHARS)] = ""
    usage: Usage | None = None
    #: Key-value pairs its creator attached (the Responses API's conversation metadata); absent when none.
    metadata: Metadata | None = None
    approvals: tuple[PendingApproval, ...] = ()
    transcript: tuple[ChunkRef, ...] = ()
    idempotency: tuple[RememberedKey, ...] = ()
    snapshot: dict[str, Any]
    #: Encoded size in bytes, known for documents this process built (0 for documents it read).
    _size: int = PrivateAttr(default=0)
    #: The stored object, built once per write by ``build`` (``None``: built on demand).
    _body: dict[str, Any] | None = PrivateAttr(default=None)

    @field_validator("transcript", mode="before")
    @classmethod
    def _chunk_pairs(cls, value: Any) -> Any:
        """Read the compact ``[[nonce, count], ...]`` form."""
        if isinstance(value, list):
            return [
                {"nonce": item[0], "count": item[1]} if isinstance(item, list) and len(item) == 2 else item
                for item in value
            ]
        return value

    @field_validator("snapshot")
    @classmethod
    def _agent_session_dict(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "session" or not isinstance(value.get("session_id"), str) or not value["session_id"]:
            raise ValueError("snapshot is not an AgentSession dict")
        if not isinstance(value.get("state", {}), dict):
            raise ValueError("snapshot state is not an object")
        return value

    @classmethod
    def build(
        cls,
        session_id: str,
        session: AgentSession,
        *,
        owner: str = "",
        previous: SessionDocument | None,
        turns: int,
        ttl_seconds: int | None,
        max_bytes: int,
        transcript: Sequence[ChunkRef] = (),
        idempotency: Sequence[RememberedKey] = (),
        usage: Usage | None = None,
        approvals: Sequence[PendingApproval] = (),
        stored_messages: Sequence[dict[str, Any]] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> SessionDocument:
        """The next document of ``session_id``, with a new ``write_id``; ``metadata`` is a new session's (later
        documents keep the previous one's).

        ``stored_messages`` are the stored dicts of the history's first messages, exactly as they were read
        (the turn restored those messages from them and never changes them): they are reused instead of
        serializing those messages again, so a turn serializes only the messages it added.

        Raises:
            TypeError: ``session`` is not exactly an ``AgentSession``, its history holds something other
                than ``Message`` objects, or its state holds a value JSON cannot represent (the error names
                its path, e.g. ``state.nested[0].value``).
            ValueError: The state holds a non-finite float (``nan``, ``inf``).
            SessionTooLargeError: The document would be larger than ``max_bytes``.
        """
        if type(session) is not AgentSession:
            raise TypeError(
                "Session stores support AgentSession instances only; custom AgentSession subclasses "
                "would not restore as themselves."
            )
        _check_history(session)
        now = utc_now()
        document = cls.model_construct(
            owner=owner,
            session_id=session_id,
            kind="snapshot",
            schema_version=SCHEMA_VERSION,
            turns=turns,
            created_at=previous.created_at if previous else now,
            updated_at=now,
            write_id=new_write_id(),
            ttl=ttl_seconds,
            title=previous.title if previous and previous.title else title_of(session),
            usage=usage,
            metadata=previous.metadata if previous else (dict(metadata) if metadata else None),
            approvals=tuple(approvals),
            transcript=tuple(transcript),
            idempotency=tuple(idempotency),
            snapshot=_snapshot(session, stored_messages),
        )
        document._body = document.stored()  # built once: measured here, written by the store
        size = document._size = len(encode_json(document._body))
        if size > max_bytes:
            raise SessionTooLargeError(
                f"The session snapshot would be {size} bytes, above the {max_bytes}-byte limit "
                "(MAX_SNAPSHOT_BYTES). Start a new session."
            )
        return document

    def revised(self, **changes: Any) -> SessionDocument:
        """The next version of this document with ``changes`` (e.g. its approvals' states): a new
        ``write_id``, ``updated_at`` now. (A turn's next document comes from ``build``.)"""
        return self.model_copy(update={**changes, "write_id": new_write_id(), "updated_at": utc_now()})

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> SessionDocument:
        """A copy with ``update`` applied; what this process measured and built of the original is not kept."""
        copy = super().model_copy(update=update, deep=deep)
        copy._body, copy._size = None, 0
        return copy

    def stored(self) -> dict[str, Any]:
        """The JSON object every backend stores (without backend fields such as ``id`` or ``_etag``)."""
        if self._body is not None:
            return self._body
        body: dict[str, Any] = {
            "owner": self.owner,
            "session_id": self.session_id,
            "kind": self.kind,
            "schema_version": self.schema_version,
            "turns": self.turns,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if self.write_id is not None:
            body["write_id"] = self.write_id
        if self.ttl is not None:
            body["ttl"] = self.ttl
        if self.title:
            body["title"] = self.title
        if self.usage is not None:
            body["usage"] = self.usage.model_dump()
        if self.metadata:
            body["metadata"] = dict(self.metadata)
        if self.approvals:
            body["approvals"] = [approval.model_dump(exclude_none=True) for approval in self.approvals]
        if self.transcript:
            body["transcript"] = [[chunk.nonce, chunk.count] for chunk in self.transcript]
        if self.idempotency:
            body["idempotency"] = [entry.model_dump(exclude_none=True) for entry in self.idempotency]
        body["snapshot"] = self.snapshot
        return body

    def __eq__(self, other: object) -> bool:
        """Equal when the stored fields are (the size this process measured is not one of them)."""
        return isinstance(other, SessionDocument) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # a document holds dicts: not hashable

    @property
    def size(self) -> int:
        """The encoded size in bytes, for documents this process built (0 for documents it read)."""
        return self._size

    @property
    def archived_count(self) -> int:
        """How many messages precede the live window."""
        return sum(chunk.count for chunk in self.transcript)

    def restore(self, window: Sequence[Message] | None = None) -> AgentSession:
        """Rebuild the ``AgentSession`` and check the rest of the document against it.

        ``window``: the live-window messages, already restored from exactly this document's stored
        messages (see ``warm.py``); they are used instead of deserializing those messages again.

        Raises:
            SessionCorruptError: The snapshot cannot be restored, its history is not a list of
                ``Message`` objects, or a remembered key points outside the transcript.
        """
        try:
            if window is None:
                session = AgentSession.from_dict(self.snapshot)
            else:
                session = AgentSession.from_dict(_without_messages(self.snapshot))
                set_history(session, list(window))
            _check_history(session)
            live = history(session)
            total = self.archived_count + len(live)
            for entry in self.idempotency:
                if entry.turn > self.turns or entry.first + entry.count > total:
                    raise ValueError(f"remembered key {entry.key!r} points outside the transcript")
            requested = {c.id for m in live for c in m.contents if c.type == "function_approval_request"}
            for approval in self.approvals:
                if approval.id not in requested:
                    raise ValueError(f"approval {approval.id!r} has no request in the live window")
        except Exception as exc:
            raise _corrupt(self.session_id, exc) from exc
        return session


class TranscriptChunk(_StoredDocument):
    """Messages that left the live window, archived in the session's partition."""

    kind: Literal["transcript"] = "transcript"
    seq: _Count
    write_id: _WriteId | None = None
    ttl: _Ttl | None = None
    messages: tuple[dict[str, Any], ...] = Field(min_length=1)

    @classmethod
    def build(
        cls, session_id: str, seq: int, messages: Sequence[Message], ttl_seconds: int | None, owner: str = ""
    ) -> TranscriptChunk:
        """A new chunk with a new ``write_id``."""
        return cls.model_construct(
            owner=owner,
            session_id=session_id,
            kind="transcript",
            seq=seq,
            write_id=new_write_id(),
            ttl=ttl_seconds,
            messages=tuple(message.to_dict() for message in messages),
        )

    def stored(self) -> dict[str, Any]:
        """The JSON object every backend stores."""
        body = self.model_dump(exclude_none=True)
        body["messages"] = list(self.messages)
        return body

    def restore(self) -> list[Message]:
        """The archived messages.

        Raises:
            SessionCorruptError: A message cannot be restored.
        """
        try:
            return [Message.from_dict(message) for message in self.messages]
        except Exception as exc:
            raise _corrupt(self.session_id, exc) from exc


class SessionSummary(_Document):
    """A row of a session listing: what ``GET /api/sessions`` shows of a stored snapshot."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    session_id: _Text
    title: Annotated[str, StringConstraints(strict=True, max_length=TITLE_CHARS)] = ""
    turns: _Count
    created_at: _Text
    updated_at: _Text

    @property
    def key(self) -> ListingKey:
        """Where this row sits in the listing order."""
        return (self.updated_at, self.session_id)


#: A position in a listing: ``(updated_at, session_id)``, ordered descending.
ListingKey = tuple[str, str]


def chunk_id(seq: int, nonce: str) -> str:
    """The id of transcript chunk number ``seq`` written with ``nonce``."""
    return f"~t~{seq}~{nonce}"


def stored_messages(document: SessionDocument | None) -> list[dict[str, Any]]:
    """The stored dicts of a document's live-window messages (what ``restore`` turned into ``Message``s)."""
    if document is None:
        return []
    provider_state = document.snapshot.get("state", {}).get(HISTORY_SOURCE_ID)
    messages = provider_state.get("messages") if isinstance(provider_state, dict) else None
    return messages if isinstance(messages, list) else []


def _without_messages(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``snapshot`` whose history provider state holds no messages."""
    state = snapshot.get("state", {})
    provider_state = state.get(HISTORY_SOURCE_ID)
    if not isinstance(provider_state, dict):
        return snapshot
    return {**snapshot, "state": {**state, HISTORY_SOURCE_ID: {**provider_state, "messages": []}}}


def _snapshot(session: AgentSession, reused: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``session.to_dict()``, with the first ``len(reused)`` history messages taken from ``reused``."""
    provider_state = session.state.get(HISTORY_SOURCE_ID)
    if not reused or not isinstance(provider_state, dict):
        return session.to_dict()
    messages = provider_state["messages"]
    provider_state["messages"] = messages[len(reused) :]  # MAF serializes only what the turn added
    try:
        snapshot = session.to_dict()
    finally:
        provider_state["messages"] = messages
    serialized = snapshot["state"][HISTORY_SOURCE_ID]
    serialized["messages"] = [*reused, *serialized["messages"]]
    return snapshot


def title_of(session: AgentSession) -> str:
    """The start of the first user message, whitespace folded, at most ``TITLE_CHARS`` characters."""
    first = next((m for m in history(session) if isinstance(m, Message) and m.role == "user" and m.text), None)
    text = " ".join(first.text.split()) if first else ""
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"


def now() -> datetime:
    """The app's clock: now, as an aware UTC datetime."""
    return datetime.now(UTC)


def utc_now() -> str:
    """Now as the documents store it: ISO 8601 UTC with milliseconds, e.g. ``2026-11-25T10:00:00.000Z``."""
    return now().isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_write_id() -> str:
    """A fresh id that makes one write recognisable as its writer's own."""
    return uuid.uuid4().hex


def history(session: AgentSession) -> list[Message]:
    """The messages the history provider keeps in the session (empty for a new session)."""
    return list(session.state.get(HISTORY_SOURCE_ID, {}).get("messages", []))


def set_history(session: AgentSession, messages: list[Message]) -> None:
    """Replace the messages the history provider keeps in the session."""
    session.state.setdefault(HISTORY_SOURCE_ID, {})["messages"] = messages


def _check_history(session: AgentSession) -> None:
    provider_state = session.state.get(HISTORY_SOURCE_ID)
    if provider_state is None:
        return
    messages = provider_state.get("messages", []) if isinstance(provider_state, dict) else None
    if not isinstance(messages, list):
        raise TypeError(f"Session state at state.{HISTORY_SOURCE_ID}.messages must be a list of Message objects.")
    for index, message in enumerate(messages):
        if not isinstance(message, Message):
            raise TypeError(
                f"Session state value at state.{HISTORY_SOURCE_ID}.messages[{index}] must be an "
                f"agent_framework Message, not {type(message).__name__!r}."
            )


def _corrupt(session_id: str, exc: BaseException) -> SessionCorruptError:
    return SessionCorruptError(
        f"The stored session '{session_id}' cannot be restored; it was left untouched.",
        internal=f"stored session {session_id!r} is corrupt: {exc}",
    )
