"""The JSON bodies the API returns, one typed model each (the HTTP reference in ``docs/api.md`` shows them).

A body renders every field (``as_json()``), but a ``Message``, whose members depend on its kind, renders only
the ones it was built with: a message's ``tool_calls`` appear only when present. Reading a body by key
(``body["turns"]``) reads its JSON.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from ..state.documents import SessionSummary, Usage


class Body(BaseModel):
    """A response body."""

    model_config = ConfigDict(frozen=True)

    def as_json(self) -> dict[str, Any]:
        """The body as JSON."""
        return self.model_dump()

    def __getitem__(self, key: str) -> Any:
        return self.as_json()[key]


class Approval(Body):
    """A tool call waiting for a person's answer."""

    id: str
    name: str
    arguments: dict[str, Any]


class ToolCall(Body):
    id: str | None
    name: str | None
    arguments: Any


class ApprovalAnswer(Body):
    id: str | None
    approved: bool


class Message(Body):
    """A message of the conversation: text (an assistant's ``tool_calls``; a user's approval ``approvals``), or
    one tool result (``role: tool``). In a transcript page each has the ``index`` of its stored message."""

    index: int | None = None
    role: str
    text: str | None = None
    tool_calls: list[ToolCall] | None = None
    approvals: list[ApprovalAnswer] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    result: str | None = None

    @model_serializer(mode="wrap")
    def _present(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        order = _TOOL_ORDER if self.role == "tool" else _TEXT_ORDER
        return {key: data[key] for key in order if key in self.model_fields_set}


_TEXT_ORDER = ("index", "role", "text", "tool_calls", "approvals")
_TOOL_ORDER = ("index", "role", "tool_call_id", "name", "result", "approvals")


class Session(Body):
    """``GET /api/sessions/{id}``: the session's summary and the messages of its live window."""

    session_id: str
    title: str
    turns: int
    created_at: str
    updated_at: str
    usage: Usage | None
    pending_approvals: list[Approval]
    messages: list[Message]


class MessagePage(Body):
    """``GET /api/sessions/{id}/messages``: one page of the whole transcript, oldest first."""

    session_id: str
    total: int
    messages: list[Message]
    next_cursor: str | None


class SessionPage(Body):
    """``GET /api/sessions``: one page of the caller's sessions, most recently updated first."""

    sessions: list[SessionSummary]
    next_cursor: str | None


class Turn(Body):
    """``POST /api/sessions/{id}/turns`` (and SSE ``done``): the stored turn."""

    session_id: str
    turn: int
    reply: str
    approvals: list[Approval]
    usage: Usage | None


class Health(Body):
    """``GET /api/health`` (anonymous: the status only)."""

    status: Literal["ok"]


class User(Body):
    id: str
    provider: str
    name: str | None


class Me(Body):
    """``GET /api/me``: how callers are identified, and who this one is (``null`` when sessions are shared)."""

    auth_mode: str
    user: User | None
    backend: str
    model: str


class Created(Body):
    """``POST /api/sessions``: a new session id."""

    session_id: str
