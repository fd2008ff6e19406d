"""Human approval of tool calls, across requests, processes and cold starts.

A tool declared with ``approval_mode="always_require"`` is never run when the model asks for it:
the turn ends, and the session is stored with MAF's ``function_approval_request`` in its history
and a ``PendingApproval`` per request in the document. A later request answers every pending
approval; MAF's ``to_function_approval_response`` turns each answer into the message that makes
the agent run the approved tools (and report rejected ones as rejected) and continue.

At most once: before any approved tool runs, the answering request *claims* the approvals with a
conditional write on the version it read. Of two racing answers only one claim can win; the loser
gets ``409`` before it has run anything. If the winner then fails (or its process dies), its claim
is marked ``interrupted`` (or goes stale after ``CLAIM_SECONDS``): the next turn tells the model
that the call's outcome is unknown, and the tool is never run again by this app.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from agent_framework import Content, Message

from ..errors import ApprovalNotPendingError, ApprovalsPendingError
from ..state.documents import PendingApproval, SessionDocument, utc_now

#: How long a claim may stay without its turn being stored before it counts as interrupted; longer
#: than any function may run (functionTimeout).
CLAIM_SECONDS = 15 * 60
INTERRUPTED = "This tool call was interrupted: whether it ran is unknown. Do not assume it succeeded; ask the user."


class Answer(NamedTuple):
    """A person's answer to one pending approval."""

    id: str
    approved: bool


def check(document: SessionDocument | None, answers: Sequence[Answer], now: datetime) -> None:
    """Refuse a request that does not answer exactly the session's pending approvals.

    Raises:
        ApprovalNotPendingError: An answer names an id that is not pending (unknown, or already answered).
        ApprovalsPendingError: Approvals are pending and the request leaves some (or all) unanswered.
    """
    approvals = document.approvals if document else ()
    waiting = {a.id: a for a in approvals if a.state == "pending"}
    answered = {answer.id for answer in answers}
    unknown = sorted(answered - set(waiting))
    if unknown:
        raise ApprovalNotPendingError(f"No tool call is waiting for approval with id {unknown[0]!r}.")
    if len(answered) != len(answers):
        raise ApprovalNotPendingError("Each pending approval is answered once.")
    missing = [waiting[i] for i in waiting if i not in answered]
    if missing:
        raise ApprovalsPendingError(
            "Tool calls are waiting for approval: answer every one of them in one request, "
            '{"approvals": [{"id": "<id>", "approved": true|false}]}.',
            extra={"pending_approvals": [a.public() for a in missing]},
        )
    busy = [a for a in approvals if a.state == "claimed" and not _stale(a, now)]
    if busy:
        raise ApprovalsPendingError(
            "Another request is running the approved tool calls of this session; retry when it is done.",
            extra={"pending_approvals": []},
        )


def unresolved(document: SessionDocument | None, now: datetime) -> list[PendingApproval]:
    """Approved calls whose answering request failed or vanished: their outcome is unknown."""
    approvals = document.approvals if document else ()
    return [a for a in approvals if a.state == "interrupted" or (a.state == "claimed" and _stale(a, now))]


def claimed(document: SessionDocument, answers: Sequence[Answer]) -> SessionDocument:
    """The document that claims ``answers``' approvals for this request (written before any tool runs)."""
    ids = {answer.id for answer in answers}
    claimed_at = utc_now()
    approvals = tuple(
        a.model_copy(update={"state": "claimed", "claimed_at": claimed_at}) if a.id in ids else a
        for a in document.approvals
    )
    return document.revised(approvals=approvals)


def interrupted(document: SessionDocument) -> SessionDocument:
    """The document that gives up this request's claims: their outcome is unknown from now on."""
    approvals = tuple(
        a.model_copy(update={"state": "interrupted"}) if a.state == "claimed" else a for a in document.approvals
    )
    return document.revised(approvals=approvals)


def approved_tools(document: SessionDocument | None, answers: Sequence[Answer]) -> set[str]:
    """The names of the tools whose pending calls ``answers`` approve (the tools this turn must have)."""
    approved = {answer.id for answer in answers if answer.approved}
    return {a.name for a in (document.approvals if document else ()) if a.id in approved}


def inputs(history: Sequence[Message], answers: Sequence[Answer], message: str | None) -> list[Message]:
    """The messages that continue the conversation: MAF's approval responses, then the user's text."""
    requests = {c.id: c for m in history for c in m.contents if c.type == "function_approval_request"}
    messages = []
    if answers:
        responses = [requests[a.id].to_function_approval_response(approved=a.approved) for a in answers]
        messages.append(Message(role="user", contents=responses))
    if message is not None:
        messages.append(Message(role="user", contents=[message]))
    return messages


def interruption_results(approvals: Sequence[PendingApproval]) -> list[Message]:
    """Tool results that tell the model the outcome of these calls is unknown."""
    if not approvals:
        return []
    return [
        Message(role="tool", contents=[Content.from_function_result(call_id=a.call_id, result=INTERRUPTED)])
        for a in approvals
    ]


def requested(requests: Sequence[Content]) -> list[PendingApproval]:
    """The approvals a turn's response asks for (MAF's ``user_input_requests``)."""
    pending = []
    for request in requests:
        call = request.function_call if request.type == "function_approval_request" else None
        if call is None or request.id is None:
            continue
        arguments: Any = call.parse_arguments() if call.arguments is not None else {}
        pending.append(
            PendingApproval(
                id=request.id,
                call_id=str(call.call_id),
                name=str(call.name),
                arguments=arguments if isinstance(arguments, dict) else {"value": arguments},
            )
        )
    return pending


def first_request_index(history: Sequence[Message], approvals: Sequence[PendingApproval]) -> int:
    """The index of the oldest message holding one of ``approvals``' requests (compaction stops there)."""
    ids = {a.id for a in approvals}
    return next(
        (
            index
            for index, m in enumerate(history)
            if any(c.type == "function_approval_request" and c.id in ids for c in m.contents)
        ),
        len(history),
    )


def _stale(approval: PendingApproval, now: datetime) -> bool:
    if approval.claimed_at is None:
        return True
    claimed_at = datetime.fromisoformat(approval.claimed_at.replace("Z", "+00:00"))
    return now - claimed_at > timedelta(seconds=CLAIM_SECONDS)
