"""The whole conversation: archived transcript chunks, then the live window.

Messages that leave the live window are written as one chunk document in the
session's partition *before* the snapshot that drops them is committed. The
snapshot lists the chunks it owns, as ``"transcript": [[nonce, count], ...]``
(chunk ``n`` has the id ``~t~<n>~<nonce>``; about 16 bytes per chunk of
``COMPACTION_MAX_MESSAGES / 2`` messages), so it is the source of truth: a chunk
written by a turn that lost a race is never listed, never shown, and is removed
with the session. Every message keeps one absolute index for its lifetime,
which makes cursors stable.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from typing import Any

from agent_framework import Message

from .errors import InvalidCursorError, SessionCorruptError
from .stores import SnapshotStore


def chunk_id(seq: int, nonce: str) -> str:
    return f"~t~{seq}~{nonce}"


def chunks(document: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The committed chunks of a snapshot document, oldest first: ``{"id", "count"}`` each."""
    listed = (document or {}).get("transcript", [])
    return [{"id": chunk_id(seq, nonce), "count": count} for seq, (nonce, count) in enumerate(listed)]


def archived_count(document: dict[str, Any] | None) -> int:
    """How many messages precede the live window."""
    return sum(count for _, count in (document or {}).get("transcript", []))


def new_chunk(
    session_id: str, seq: int, messages: Sequence[Message], ttl_seconds: int | None
) -> tuple[list[Any], str, dict[str, Any]]:
    """A chunk unique to this writer: its entry for the snapshot's list, its id and its document."""
    nonce = uuid.uuid4().hex[:8]
    document: dict[str, Any] = {
        "session_id": session_id,
        "kind": "transcript",
        "seq": seq,
        "messages": [message.to_dict() for message in messages],
    }
    if ttl_seconds is not None:
        document["ttl"] = ttl_seconds
    return [nonce, len(messages)], chunk_id(seq, nonce), document


async def read_range(
    store: SnapshotStore,
    session_id: str,
    document: dict[str, Any] | None,
    live: Sequence[Message],
    start: int,
    end: int,
) -> list[Message]:
    """Messages ``start``..``end`` (absolute indexes), reading only the chunks that hold them."""
    result: list[Message] = []
    offset = 0
    for chunk in chunks(document):
        chunk_end = offset + chunk["count"]
        if offset < end and start < chunk_end:
            stored = await store.read_chunk(session_id, chunk["id"])
            if stored is None or len(stored.get("messages", [])) != chunk["count"]:
                raise SessionCorruptError(f"Transcript chunk {chunk['id']} of session '{session_id}' is missing.")
            messages = stored["messages"][max(start - offset, 0) : min(end, chunk_end) - offset]
            result.extend(Message.from_dict(message) for message in messages)
        offset = chunk_end
    result.extend(live[max(start - offset, 0) : max(end - offset, 0)])
    return result


def encode_cursor(index: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{index}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The absolute index a cursor points at (0 without one)."""
    if not cursor:
        return 0
    try:
        version, index = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(":")
        if version == "v1" and index.isdigit():
            return int(index)
    except ValueError:
        pass
    raise InvalidCursorError("The cursor is not one this API returned.")
