"""File store: one JSON file per session under ``MAF_SESSION_DIR``, for local runs.

Transcript chunks live beside it, in ``<encoded id>.transcript/<chunk id>.json``.

MAF's ``FileSessionStore`` maps opaque ids to safe file names (encoding, path
traversal checks); we reuse that mapping. Unlike it, writes here are
compare-and-swap under a directory lock, so two processes never silently
overwrite each other. Reads need no lock: files are replaced atomically.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent_framework import FileSessionStore

from .. import snapshots
from ..errors import SessionConflictError, SessionCorruptError, StoreUnavailableError
from .base import Record, SnapshotStore

_CHUNK_ID = re.compile(r"[A-Za-z0-9~._-]{1,100}")


class FileSnapshotStore(SnapshotStore):
    """Snapshot documents as ``<encoded id>.json`` files with an ``_etag`` field."""

    backend = "file"

    def __init__(self, directory: str | Path, **options: Any) -> None:
        super().__init__(**options)
        self._names = FileSessionStore(directory)
        self.directory = self._names.storage_path
        self._lock_path = self.directory / ".write.lock"

    async def read(self, session_id: str) -> Record | None:
        path = self._path(session_id)
        return await asyncio.to_thread(self._read_file, path, session_id)

    async def create(self, session_id: str, document: dict[str, Any]) -> str:
        return await self._write(session_id, document, expected=None, conditional=True)

    async def replace(self, session_id: str, document: dict[str, Any], etag: str) -> str:
        return await self._write(session_id, document, expected=etag, conditional=True)

    async def upsert(self, session_id: str, document: dict[str, Any]) -> str:
        return await self._write(session_id, document, expected=None, conditional=False)

    async def remove(self, session_id: str) -> None:
        path = self._path(session_id)

        def _remove() -> None:
            with self._exclusive():
                path.unlink(missing_ok=True)
                shutil.rmtree(self._chunk_dir(path), ignore_errors=True)

        await asyncio.to_thread(_remove)

    async def write_chunk(self, session_id: str, chunk_id: str, document: dict[str, Any]) -> None:
        chunk = self._chunk_path(session_id, chunk_id)
        payload = json.dumps(document, ensure_ascii=False).encode("utf-8")

        def _write() -> None:
            chunk.parent.mkdir(exist_ok=True)
            _replace_atomically(chunk, payload)

        await asyncio.to_thread(_write)

    async def read_chunk(self, session_id: str, chunk_id: str) -> dict[str, Any] | None:
        chunk = self._chunk_path(session_id, chunk_id)

        def _read() -> dict[str, Any] | None:
            try:
                return json.loads(chunk.read_bytes())
            except FileNotFoundError:
                return None

        return await asyncio.to_thread(_read)

    async def delete_chunk(self, session_id: str, chunk_id: str) -> None:
        await asyncio.to_thread(self._chunk_path(session_id, chunk_id).unlink, missing_ok=True)

    async def ping(self) -> None:
        if not os.access(self.directory, os.W_OK):
            raise StoreUnavailableError(f"Session directory {self.directory} is not writable.")

    def _path(self, session_id: str) -> Path:
        self.validate_session_id(session_id)
        return self._names._session_file_path(session_id)  # MAF's safe id -> file name mapping

    @staticmethod
    def _chunk_dir(snapshot_path: Path) -> Path:
        return snapshot_path.with_suffix(".transcript")

    def _chunk_path(self, session_id: str, chunk_id: str) -> Path:
        if not _CHUNK_ID.fullmatch(chunk_id):
            raise ValueError(f"invalid transcript chunk id {chunk_id!r}")
        return self._chunk_dir(self._path(session_id)) / f"{chunk_id}.json"

    async def _write(
        self, session_id: str, document: dict[str, Any], *, expected: str | None, conditional: bool
    ) -> str:
        path = self._path(session_id)
        etag = uuid.uuid4().hex
        payload = json.dumps({**document, "_etag": etag}, ensure_ascii=False).encode("utf-8")

        def _swap() -> str:
            with self._exclusive():
                current = self._read_file(path, session_id)
                if conditional and (current.etag if current else None) != expected:
                    raise SessionConflictError(f"Session '{session_id}' was changed by another request.")
                _replace_atomically(path, payload)
                return etag

        return await asyncio.to_thread(_swap)

    @staticmethod
    def _read_file(path: Path, session_id: str) -> Record | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            document = json.loads(raw)
            etag = document.pop("_etag")
        except (ValueError, KeyError, AttributeError, TypeError) as exc:
            snapshots.logger.error("Stored snapshot of session %r is not valid JSON: %s", session_id, exc)
            raise SessionCorruptError(
                f"The stored snapshot of session '{session_id}' is not valid JSON; it was left untouched."
            ) from exc
        return Record(document, str(etag))

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the directory's write lock, across threads and processes."""
        with open(self._lock_path, "a+b") as handle:
            if os.name == "nt":  # pragma: no cover - exercised on Windows only
                import msvcrt

                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                try:
                    yield
                finally:
                    handle.seek(0)
                    msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)


def _replace_atomically(path: Path, payload: bytes) -> None:
    """Write ``path`` so that readers see the old file or the new one, never a partial one."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temp.write_bytes(payload)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
