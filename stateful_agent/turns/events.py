"""What a turn yields, in order, to whichever front door runs it (``TurnService.turn``).

``Accepted`` first: the request was checked against the stored session, and approvals it answers were
claimed (errors before it are the caller's to report as plain errors); ``replayed`` when the turn was
stored before under the same ``Idempotency-Key``. Then, for a live streamed turn, ``TextDelta``s and tool
steps as the model works; then one ``ApprovalRequested`` per tool call left waiting for a person; last
``Completed`` with the stored result. Each event but ``Accepted`` has a ``kind`` and a JSON ``data``
payload, which are this app's own SSE event names and bodies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from .service import TurnResult


@dataclass(frozen=True)
class Accepted:
    """The turn was admitted (or is a replay of a stored one); nothing is sent for it. ``turn`` is the number
    the turn is stored under, ``first`` the transcript index of the first message it adds (its reply)."""

    session_id: str
    replayed: bool = False
    turn: int = 0
    first: int = 0


@dataclass(frozen=True)
class TextDelta:
    """The model wrote more of its reply."""

    text: str
    kind: ClassVar[str] = "delta"

    @property
    def data(self) -> dict[str, Any]:
        return {"text": self.text}


@dataclass(frozen=True)
class ToolEvent:
    """The model asked for a tool (``tool_call``: ``id``, ``name``, ``arguments``), or it ran
    (``tool_result``: ``id``, ``name``, ``result``)."""

    kind: Literal["tool_call", "tool_result"]
    data: dict[str, Any]


@dataclass(frozen=True)
class ApprovalRequested:
    """A tool call waits for a person's answer: ``{"id", "name", "arguments"}``."""

    data: dict[str, Any]
    kind: ClassVar[str] = "approval"


@dataclass(frozen=True)
class Completed:
    """The turn is stored (or was, for a replay): its result."""

    result: TurnResult
    kind: ClassVar[str] = "done"

    @property
    def data(self) -> dict[str, Any]:
        return self.result.as_json()


TurnEvent = Accepted | TextDelta | ToolEvent | ApprovalRequested | Completed


def ending(result: TurnResult) -> list[ApprovalRequested | Completed]:
    """The events that end a stored turn: its waiting approvals, then ``Completed``."""
    return [*(ApprovalRequested(approval) for approval in result.approvals), Completed(result)]
