"""In-process store: for tests and single-process experiments; forgotten on restart."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

from ..errors import SessionConflictError
from ..state.documents import ListingKey
from ..state.jsontext import encode_json
from .base import SnapshotStore, Stored, listing_order


class MemorySnapshotStore(SnapshotStore):
    """Keeps each object as JSON text, so every read is an independent copy. Any non-empty id works."""

    backend = "memory"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._items: dict[tuple[str, str], tuple[bytes, str]] = {}
        self._chunks: dict[tuple[str, str], dict[str, bytes]] = {}
        self._lock = threading.Lock()

    async def _read(self, owner: str, session_id: str) -> Stored | None:
        item = self._items.get((owner, session_id))
        return None if item is None else (json.loads(item[0]), item[1])

    async def _create(self, owner: str, session_id: str, body: dict[str, Any]) -> str:
        with self._lock:
            if (owner, session_id) in self._items:
                raise SessionConflictError(f"Session '{session_id}' was created by another request.")
            return self._put(owner, session_id, body)

    async def _replace(self, owner: str, session_id: str, body: dict[str, Any], etag: str) -> str:
        with self._lock:
            current = self._items.get((owner, session_id))
            if current is None or current[1] != etag:
                raise SessionConflictError(f"Session '{session_id}' was changed by another request.")
            return self._put(owner, session_id, body)

    async def _upsert(self, owner: str, session_id: str, body: dict[str, Any]) -> str:
        with self._lock:
            return self._put(owner, session_id, body)

    async def _remove(self, owner: str, session_id: str) -> None:
        with self._lock:
            self._items.pop((owner, session_id), None)
            self._chunks.pop((owner, session_id), None)

    async def _create_chunk(self, owner: str, session_id: str, chunk_id: str, body: dict[str, Any]) -> None:
        with self._lock:
            chunks = self._chunks.setdefault((owner, session_id), {})
            if chunk_id in chunks:
                raise SessionConflictError(f"Transcript chunk {chunk_id} of session '{session_id}' exists.")
            chunks[chunk_id] = encode_json(body)

    async def _read_chunk(self, owner: str, session_id: str, chunk_id: str) -> dict[str, Any] | None:
        raw = self._chunks.get((owner, session_id), {}).get(chunk_id)
        return None if raw is None else json.loads(raw)

    async def _delete_chunk(self, owner: str, session_id: str, chunk_id: str) -> None:
        with self._lock:
            self._chunks.get((owner, session_id), {}).pop(chunk_id, None)

    async def _chunk_ids(self, owner: str, session_id: str) -> list[str]:
        return list(self._chunks.get((owner, session_id), {}))

    async def _list(self, owner: str, limit: int, after: ListingKey | None) -> list[dict[str, Any]]:
        with self._lock:
            mine = [json.loads(raw) for (item_owner, _), (raw, _) in self._items.items() if item_owner == owner]
        return listing_order(mine, limit, after)

    def _put(self, owner: str, session_id: str, body: dict[str, Any]) -> str:
        etag = uuid.uuid4().hex
        self._items[(owner, session_id)] = (encode_json(body), etag)
        return etag
