"""The stored snapshot document: built from an ``AgentSession``, validated on the way back.

One document per session, the same for every backend::

    {"session_id", "kind": "snapshot", "schema_version", "turns", "created_at", "updated_at",
     "ttl" (only when SESSION_TTL_SECONDS is set),
     "transcript": [[nonce, count], ...] (archived chunks, when any; see transcript.py),
     "idempotency": [{"key", "fingerprint", "turn", "first", "count"}] (when any; see idempotency.py),
     "snapshot": <AgentSession.to_dict() of the live window, unmodified>}

A document that cannot be restored raises ``SessionCorruptError``: never half-used.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from agent_framework import AgentSession, InMemoryHistoryProvider, Message

from .errors import SessionCorruptError, SessionTooLargeError

SCHEMA_VERSION = 1
HISTORY_SOURCE_ID = InMemoryHistoryProvider.DEFAULT_SOURCE_ID

logger = logging.getLogger(__name__)


def utc_now() -> str:
    """An ISO 8601 UTC timestamp with milliseconds, e.g. ``2026-11-25T10:00:00.000Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def history(session: AgentSession) -> list[Message]:
    """The messages the history provider keeps in the session (empty for a new session)."""
    return list(session.state.get(HISTORY_SOURCE_ID, {}).get("messages", []))


def set_history(session: AgentSession, messages: list[Message]) -> None:
    """Replace the messages the history provider keeps in the session."""
    session.state.setdefault(HISTORY_SOURCE_ID, {})["messages"] = messages


def build_document(
    session_id: str,
    session: AgentSession,
    *,
    previous: dict[str, Any] | None,
    turns: int,
    ttl_seconds: int | None,
    max_bytes: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The document stored under ``session_id``; refuses one larger than ``max_bytes``.

    ``extra`` carries the transcript chunk list and remembered idempotency keys.
    """
    now = utc_now()
    document: dict[str, Any] = {
        "session_id": session_id,
        "kind": "snapshot",
        "schema_version": SCHEMA_VERSION,
        "turns": turns,
        "created_at": previous["created_at"] if previous else now,
        "updated_at": now,
        "snapshot": session.to_dict(),
        **(extra or {}),
    }
    if ttl_seconds is not None:
        document["ttl"] = ttl_seconds
    size = len(json.dumps(document).encode("utf-8"))
    if size > max_bytes:
        raise SessionTooLargeError(
            f"The session snapshot would be {size} bytes, above the {max_bytes}-byte limit (MAX_SNAPSHOT_BYTES). "
            "Start a new session."
        )
    return document


def restore(document: dict[str, Any], session_id: str) -> AgentSession:
    """Rebuild the ``AgentSession`` from a stored document, or raise ``SessionCorruptError``."""
    try:
        _check_envelope(document, session_id)
        session = AgentSession.from_dict(document["snapshot"])
        messages = session.state.get(HISTORY_SOURCE_ID, {}).get("messages", [])
        if not isinstance(messages, list) or not all(isinstance(m, Message) for m in messages):
            raise ValueError("history messages did not restore to Message objects")
    except Exception as exc:
        logger.error("Stored snapshot of session %r cannot be restored: %s", session_id, exc, exc_info=True)
        raise SessionCorruptError(
            f"The stored snapshot of session '{session_id}' cannot be restored; it was left untouched."
        ) from exc
    return session


def _check_envelope(document: Any, session_id: str) -> None:
    if not isinstance(document, dict):
        raise ValueError("document is not a JSON object")
    if document.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"unsupported schema_version {document.get('schema_version')!r}")
    if document.get("session_id") != session_id:
        raise ValueError("document belongs to another session")
    turns = document.get("turns")
    if not isinstance(turns, int) or isinstance(turns, bool) or turns < 0:
        raise ValueError(f"invalid turns {turns!r}")
    for field in ("created_at", "updated_at"):
        if not isinstance(document.get(field), str):
            raise ValueError(f"missing {field}")
    snapshot = document.get("snapshot")
    if not isinstance(snapshot, dict) or snapshot.get("type") != "session" or not snapshot.get("session_id"):
        raise ValueError("snapshot is not an AgentSession dict")
