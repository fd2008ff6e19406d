"""In-process store: for tests and single-process experiments; forgotten on restart."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from ..errors import SessionConflictError
from .base import Record, SnapshotStore


class MemorySnapshotStore(SnapshotStore):
    """Keeps each document as JSON text, so every read is an independent copy."""

    backend = "memory"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._items: dict[str, tuple[str, str]] = {}
        self._chunks: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    async def read(self, session_id: str) -> Record | None:
        item = self._items.get(session_id)
        return None if item is None else Record(json.loads(item[0]), item[1])

    async def create(self, session_id: str, document: dict[str, Any]) -> str:
        with self._lock:
            if session_id in self._items:
                raise SessionConflictError(f"Session '{session_id}' was created by another request.")
            return self._put(session_id, document)

    async def replace(self, session_id: str, document: dict[str, Any], etag: str) -> str:
        with self._lock:
            current = self._items.get(session_id)
            if current is None or current[1] != etag:
                raise SessionConflictError(f"Session '{session_id}' was changed by another request.")
            return self._put(session_id, document)

    async def upsert(self, session_id: str, document: dict[str, Any]) -> str:
        with self._lock:
            return self._put(session_id, document)

    async def remove(self, session_id: str) -> None:
        with self._lock:
            self._items.pop(session_id, None)
            self._chunks.pop(session_id, None)

    async def write_chunk(self, session_id: str, chunk_id: str, document: dict[str, Any]) -> None:
        with self._lock:
            self._chunks.setdefault(session_id, {})[chunk_id] = json.dumps(document)

    async def read_chunk(self, session_id: str, chunk_id: str) -> dict[str, Any] | None:
        raw = self._chunks.get(session_id, {}).get(chunk_id)
        return None if raw is None else json.loads(raw)

    async def delete_chunk(self, session_id: str, chunk_id: str) -> None:
        with self._lock:
            self._chunks.get(session_id, {}).pop(chunk_id, None)

    def _put(self, session_id: str, document: dict[str, Any]) -> str:
        etag = uuid.uuid4().hex
        self._items[session_id] = (json.dumps(document), etag)
        return etag
