"""In-process store: for tests and single-process experiments; forgotten on restart."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from ..errors import SessionConflictError
from ..jsontext import encode_json
from .base import SnapshotStore, Stored


class MemorySnapshotStore(SnapshotStore):
    """Keeps each object as JSON text, so every read is an independent copy. Any non-empty id works."""

    backend = "memory"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._items: dict[str, tuple[bytes, str]] = {}
        self._chunks: dict[str, dict[str, bytes]] = {}
        self._lock = threading.Lock()

    async def _read(self, session_id: str) -> Stored | None:
        item = self._items.get(session_id)
        return None if item is None else (json.loads(item[0]), item[1])

    async def _create(self, session_id: str, body: dict[str, Any]) -> str:
        with self._lock:
            if session_id in self._items:
                raise SessionConflictError(f"Session '{session_id}' was created by another request.")
            return self._put(session_id, body)

    async def _replace(self, session_id: str, body: dict[str, Any], etag: str) -> str:
        with self._lock:
            current = self._items.get(session_id)
            if current is None or current[1] != etag:
                raise SessionConflictError(f"Session '{session_id}' was changed by another request.")
            return self._put(session_id, body)

    async def _upsert(self, session_id: str, body: dict[str, Any]) -> str:
        with self._lock:
            return self._put(session_id, body)

    async def _remove(self, session_id: str) -> None:
        with self._lock:
            self._items.pop(session_id, None)
            self._chunks.pop(session_id, None)

    async def _create_chunk(self, session_id: str, chunk_id: str, body: dict[str, Any]) -> None:
        with self._lock:
            chunks = self._chunks.setdefault(session_id, {})
            if chunk_id in chunks:
                raise SessionConflictError(f"Transcript chunk {chunk_id} of session '{session_id}' exists.")
            chunks[chunk_id] = encode_json(body)

    async def _read_chunk(self, session_id: str, chunk_id: str) -> dict[str, Any] | None:
        raw = self._chunks.get(session_id, {}).get(chunk_id)
        return None if raw is None else json.loads(raw)

    async def _delete_chunk(self, session_id: str, chunk_id: str) -> None:
        with self._lock:
            self._chunks.get(session_id, {}).pop(chunk_id, None)

    def _put(self, session_id: str, body: dict[str, Any]) -> str:
        etag = uuid.uuid4().hex
        self._items[session_id] = (encode_json(body), etag)
        return etag
