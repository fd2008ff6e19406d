"""Cursors of ``GET /api/sessions``: an opaque position ``(updated_at, session_id)`` in the listing.

The listing is ordered by ``updated_at`` then ``session_id``, both descending; a cursor names the last
row of a page, and the next page starts strictly after it (keyset paging: no offsets, so a page costs
the same wherever it is, and a session updated meanwhile is neither skipped nor repeated within a page).
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from ..errors import InvalidCursorError
from ..state.documents import ListingKey

_PREFIX = "l1"
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def encode_cursor(key: ListingKey) -> str:
    """The cursor of a listing position."""
    raw = json.dumps([_PREFIX, key[0], key[1]], separators=(",", ":"), ensure_ascii=True)
    return base64.urlsafe_b64encode(raw.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str | None) -> ListingKey | None:
    """The position a cursor names (``None`` without one).

    Raises:
        InvalidCursorError: The cursor is not one this API returned.
    """
    if cursor is None:
        return None
    try:
        prefix, updated_at, session_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        valid = (
            prefix == _PREFIX
            and isinstance(updated_at, str)
            and _TIMESTAMP.fullmatch(updated_at) is not None
            and isinstance(session_id, str)
            and 0 < len(session_id) <= 1024
            and encode_cursor((updated_at, session_id)) == cursor
        )
    except (binascii.Error, ValueError, TypeError):
        valid = False
    if not valid:
        raise InvalidCursorError("The cursor is not one this API returned for the session listing.")
    return updated_at, session_id
