"""The API's opaque paging cursors, one codec: base64url text that must round-trip exactly.

- Transcript pages (``GET /api/sessions/{id}/messages``): ``v1:<absolute message index>``. Every message
  keeps its index for its lifetime, so a cursor stays valid while the session grows.
- Session listings (``GET /api/sessions``): ``["l1", updated_at, session_id]``, the last row of a page; the
  next page starts strictly after it (keyset paging: a page costs the same wherever it is, and a session
  updated meanwhile is neither skipped nor repeated within a page).

- Places in a session that other protocols name (a Responses API response, an A2A task):
  ``<prefix><session id, base64url>.<number>....<owner tag>``, the numbers being turns and transcript indexes;
  the owner tag, a fingerprint of the caller, makes another caller's id name nothing of theirs.

A cursor that is not exactly one this API wrote is refused (``InvalidCursorError``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence

from ..errors import InvalidCursorError
from ..state.documents import ListingKey
from ..state.jsontext import decode_json

_INDEX = re.compile(r"v1:(0|[1-9][0-9]{0,15})")
_LISTING = "l1"
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def _pack(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")


def _unpack(cursor: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        return None


def message_cursor(index: int) -> str:
    """The cursor of absolute message index ``index``."""
    return _pack(f"v1:{index}")


def message_index(cursor: str | None, total: int) -> int:
    """The absolute index a transcript cursor points at (0 without one).

    Raises:
        InvalidCursorError: The cursor is not one this API returned for a transcript of ``total`` messages.
    """
    if cursor is None:
        return 0
    match = _INDEX.fullmatch(_unpack(cursor) or "")
    index = int(match.group(1)) if match else -1
    if index < 0 or message_cursor(index) != cursor or index >= total:
        raise InvalidCursorError("The cursor is not one this API returned for this session.")
    return index


def listing_cursor(key: ListingKey) -> str:
    """The cursor of a listing position."""
    return _pack(json.dumps([_LISTING, key[0], key[1]], separators=(",", ":"), ensure_ascii=True))


def listing_key(cursor: str | None) -> ListingKey | None:
    """The listing position a cursor names (``None`` without one).

    Raises:
        InvalidCursorError: The cursor is not one this API returned.
    """
    if cursor is None:
        return None
    try:
        prefix, updated_at, session_id = decode_json(_unpack(cursor) or "null", 1)
        valid = (
            prefix == _LISTING
            and isinstance(updated_at, str)
            and _TIMESTAMP.fullmatch(updated_at) is not None
            and isinstance(session_id, str)
            and 0 < len(session_id) <= 1024
            and listing_cursor((updated_at, session_id)) == cursor
        )
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise InvalidCursorError("The cursor is not one this API returned for the session listing.")
    return updated_at, session_id


def owner_tag(kind: str, owner: str) -> str:
    """A short fingerprint of a caller, for the ids of ``kind`` it is given."""
    return hashlib.sha256(f"{kind}:{owner}".encode()).hexdigest()[:8]


def place_id(prefix: str, session_id: str, numbers: Sequence[int], tag: str) -> str:
    """The id of a place in a session: ``prefix``, the session id, ``numbers`` and the owner ``tag``."""
    encoded = base64.urlsafe_b64encode(session_id.encode()).decode("ascii").rstrip("=")
    return ".".join([f"{prefix}{encoded}", *(str(n) for n in numbers), tag])


def read_place_id(prefix: str, text: object, count: int, tag: str) -> tuple[str, list[int]] | None:
    """The session id and ``count`` numbers of a place id with owner ``tag``; ``None`` unless ``text`` is
    exactly an id ``place_id`` writes."""
    if not isinstance(text, str) or not text.startswith(prefix) or len(text) > 400:
        return None
    parts = text[len(prefix) :].split(".")
    if len(parts) != count + 2 or not all(part.isascii() and part.isdigit() for part in parts[1:-1]):
        return None
    try:
        session_id = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    numbers = [int(part) for part in parts[1:-1]]
    return (session_id, numbers) if place_id(prefix, session_id, numbers, tag) == text else None
