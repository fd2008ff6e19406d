"""The whole conversation: archived transcript chunks, then the live window.

Messages that leave the live window are written as one chunk document in the
session's partition *before* the snapshot that drops them is committed. The
snapshot lists the chunks it owns, as ``"transcript": [[nonce, count], ...]``
(chunk ``n`` has the id ``~t~<n>~<nonce>``; about 16 bytes per chunk of
``COMPACTION_MAX_MESSAGES / 2`` messages), so it is the source of truth: a chunk
written by a turn that lost a race is never listed, never shown, and is removed
with the session. Every message keeps one absolute index for its lifetime,
which makes cursors stable (``cursors.py``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from agent_framework import Message

from ..errors import SessionCorruptError
from ..state.documents import ChunkRef, SessionDocument, TranscriptChunk, chunk_id
from ..stores import SnapshotStore

logger = logging.getLogger(__name__)


def new_chunk(
    session_id: str, seq: int, messages: Sequence[Message], ttl_seconds: int | None, owner: str = ""
) -> tuple[ChunkRef, str, TranscriptChunk]:
    """A chunk unique to this writer: its entry for the snapshot's list, its id and its document."""
    ref = ChunkRef.model_construct(nonce=uuid.uuid4().hex[:8], count=len(messages))
    return ref, chunk_id(seq, ref.nonce), TranscriptChunk.build(session_id, seq, messages, ttl_seconds, owner)


async def read_range(
    store: SnapshotStore, document: SessionDocument, live: Sequence[Message], start: int, end: int
) -> list[Message]:
    """Messages ``start``..``end`` (absolute indexes), reading only the chunks that hold them.

    Raises:
        SessionCorruptError: A listed chunk is missing or does not match the listing.
        StoreUnavailableError: The store cannot be reached.
    """
    result: list[Message] = []
    offset = 0
    for seq, ref in enumerate(document.transcript):
        chunk_end = offset + ref.count
        if offset < end and start < chunk_end:
            stored = await store.read_chunk(document.session_id, chunk_id(seq, ref.nonce), document.owner)
            if stored is None or stored.seq != seq or len(stored.messages) != ref.count:
                raise SessionCorruptError(
                    f"Transcript chunk {seq} of session '{document.session_id}' is missing or does not match "
                    "the snapshot; the session was left untouched.",
                    internal=f"transcript chunk {seq} of session {document.session_id!r} is missing or does not match",
                )
            messages = stored.restore()
            result.extend(messages[max(start - offset, 0) : min(end, chunk_end) - offset])
        offset = chunk_end
    result.extend(live[max(start - offset, 0) : max(end - offset, 0)])
    return result


def views(messages: Sequence[Message], context: Sequence[Message]) -> list[tuple[int, dict[str, Any]]]:
    """How the API shows messages, each view with the position of its message in ``messages``: text; an
    assistant's ``tool_calls``; a tool's result; a user's approval answers. A tool message holding the
    results of several (parallel) calls shows as one view per result, as Chat Completions sends them.
    ``context`` names the tools of results whose call is not among ``messages``."""
    names = {c.call_id: c.name for m in [*context, *messages] for c in m.contents if c.type == "function_call"}
    shown: list[tuple[int, dict[str, Any]]] = []
    for position, message in enumerate(messages):
        calls = [c for c in message.contents if c.type == "function_call" and not c.informational_only]
        results = [c for c in message.contents if c.type == "function_result"]
        answers = [c for c in message.contents if c.type == "function_approval_response"]
        message_views = [
            {
                "role": "tool",
                "tool_call_id": result.call_id,
                "name": names.get(result.call_id),
                "result": tool_result_text(result),
            }
            for result in results
        ] or [{"role": str(message.role), "text": message.text}]
        if calls and not results:
            message_views[0]["tool_calls"] = [
                {"id": c.call_id, "name": c.name, "arguments": tool_arguments(c)} for c in calls
            ]
        if answers:
            message_views[0]["approvals"] = [{"id": c.id, "approved": bool(c.approved)} for c in answers]
        shown += [(position, view) for view in message_views]
    return shown


def shown(view: dict[str, Any]) -> bool:
    """Whether a message view says anything (the live-window summary leaves out empty ones)."""
    return bool(view.get("text") or len(view) > 2)


def tool_arguments(content: Any) -> Any:
    """A tool call's arguments as JSON: an object when they parse, else the raw text."""
    try:
        return content.parse_arguments() or {}
    except (ValueError, TypeError):
        return content.arguments


def tool_result_text(content: Any) -> str:
    """A tool result as text (its exception's text when it failed)."""
    return str(content.result) if content.result is not None else str(content.exception or "")
