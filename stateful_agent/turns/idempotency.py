"""Idempotent retries: a session remembers the ``Idempotency-Key`` of its recent turns.

Each remembered key points at its turn (number, and where the reply's messages
sit in the transcript), so a repeat is answered from the stored session without
calling the model, and the snapshot stays small: replies are not stored twice.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import IdempotencyKeyReusedError, InvalidIdempotencyKeyError

if TYPE_CHECKING:  # the HTTP layer imports validate_key; the agent SDK loads only with the service
    from ..state.documents import RememberedKey, SessionDocument

_KEY = re.compile(r"[\x21-\x7e]{1,128}")


def validate_key(raw: str | None) -> str | None:
    """The key from the header, or ``None`` when absent.

    Raises:
        InvalidIdempotencyKeyError: It is not 1-128 visible ASCII characters.
    """
    if raw is None:
        return None
    if not _KEY.fullmatch(raw):
        raise InvalidIdempotencyKeyError("Idempotency-Key must be 1-128 visible ASCII characters.")
    return raw


def fingerprint(message: str | None, answers: Sequence[tuple[str, bool]] = ()) -> str:
    """What makes two requests with one key 'the same request': the message and the approval answers."""
    request: dict[str, Any] = {"message": message}
    if answers:
        request["approvals"] = sorted([identifier, approved] for identifier, approved in answers)
    return hashlib.sha256(json.dumps(request).encode("utf-8")).hexdigest()[:32]


def find(document: SessionDocument | None, key: str, request_fingerprint: str) -> RememberedKey | None:
    """The remembered turn of ``key``, or ``None``.

    Raises:
        IdempotencyKeyReusedError: The key was remembered with another request.
    """
    if document is None:
        return None
    entry = next((e for e in document.idempotency if e.key == key), None)
    if entry is not None and entry.fingerprint != request_fingerprint:
        raise IdempotencyKeyReusedError("This Idempotency-Key was used for a different request in this session.")
    return entry


def remember(document: SessionDocument | None, entry: RememberedKey, limit: int) -> tuple[RememberedKey, ...]:
    """The session's remembered keys with ``entry`` added, newest last, at most ``limit``."""
    entries = [e for e in (document.idempotency if document else ()) if e.key != entry.key]
    return (*entries, entry)[-limit:]
