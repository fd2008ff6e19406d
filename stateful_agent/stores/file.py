"""File store: one JSON file per session under ``MAF_SESSION_DIR``, for local runs.

Transcript chunks live beside it, in ``<file stem>.transcript/<chunk id>.json``. Sessions without an
owner (``AUTH_MODE=none``) sit in the directory itself, as before identities existed; each owner's
sessions sit in ``.owners/<owner's file stem>/``.

File names follow MAF's ``FileSessionStore`` (so sessions stored by earlier
versions keep their files): an id made only of lowercase ASCII letters, digits,
``.``, ``_`` and ``-`` is its own file stem; any other id is ``~session-`` plus
its lowercase base32 (case-stable, so injective on case-insensitive file
systems), or a SHA-256 digest when that would be too long. Unlike MAF's store,
writes are compare-and-swap under a directory lock, so two processes never
silently overwrite each other, and files are replaced atomically, so a crash
mid-write leaves the previous version. It does not coordinate across machines.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import uuid
from base64 import b32encode
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from agent_framework import FileSessionStore

from ..errors import SessionConflictError, SessionCorruptError, StoreUnavailableError
from ..state.documents import ListingKey
from ..state.jsontext import encode_json
from .base import SnapshotStore, Stored, listing_order

T = TypeVar("T")

_CHUNK_ID = re.compile(r"[A-Za-z0-9~._-]{1,100}")
_ENCODED_PREFIX = "~session-"
_MAX_ENCODED_STEM = 180
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in ("1", "2", "3", "4", "5", "6", "7", "8", "9", "¹", "²", "³")}
)


def file_stem(session_id: str) -> str:
    """The file name stem of a session id (MAF ``FileSessionStore``'s naming, see the module docstring)."""
    literal = (
        not session_id.startswith(".")
        and not session_id.endswith((" ", "."))
        and session_id.split(".", 1)[0].upper() not in _WINDOWS_RESERVED
        and all(c.isascii() and ((c.isalnum() and not c.isupper()) or c in "._-") for c in session_id)
    )
    if literal:
        return session_id
    encoded = _ENCODED_PREFIX + b32encode(session_id.encode("utf-8")).decode("ascii").rstrip("=").lower()
    if len(encoded) <= _MAX_ENCODED_STEM:
        return encoded
    return f"{_ENCODED_PREFIX}sha256-{hashlib.sha256(session_id.encode('utf-8')).hexdigest()}"


class FileSnapshotStore(SnapshotStore):
    """Snapshot documents as ``<file stem>.json`` files with an ``_etag`` field."""

    backend = "file"

    #: File names stay portable: ids are at most 128 characters (MAF's file-store rule).
    validate_session_id = staticmethod(FileSessionStore.validate_session_id)

    def __init__(self, directory: str | Path, **options: Any) -> None:
        super().__init__(**options)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._root = self.directory.resolve()
        self._lock_path = self.directory / ".write.lock"

    async def _read(self, owner: str, session_id: str) -> Stored | None:
        path = self.path(session_id, owner)
        return await self._run(lambda: self._read_file(path, session_id))

    async def _create(self, owner: str, session_id: str, body: dict[str, Any]) -> str:
        return await self._write(owner, session_id, body, expected=None, conditional=True)

    async def _replace(self, owner: str, session_id: str, body: dict[str, Any], etag: str) -> str:
        return await self._write(owner, session_id, body, expected=etag, conditional=True)

    async def _upsert(self, owner: str, session_id: str, body: dict[str, Any]) -> str:
        return await self._write(owner, session_id, body, expected=None, conditional=False)

    async def _remove(self, owner: str, session_id: str) -> None:
        path = self.path(session_id, owner)

        def remove() -> None:
            with self._exclusive():
                path.unlink(missing_ok=True)
                shutil.rmtree(self._chunk_dir(path), ignore_errors=True)

        await self._run(remove)

    async def _create_chunk(self, owner: str, session_id: str, chunk_id: str, body: dict[str, Any]) -> None:
        chunk = self._chunk_path(owner, session_id, chunk_id)
        payload = encode_json(body)

        def write() -> None:
            with self._exclusive():
                if chunk.exists():
                    raise SessionConflictError(f"Transcript chunk {chunk_id} of session '{session_id}' exists.")
                chunk.parent.mkdir(parents=True, exist_ok=True)
                replace_atomically(chunk, payload)

        await self._run(write)

    async def _read_chunk(self, owner: str, session_id: str, chunk_id: str) -> dict[str, Any] | None:
        chunk = self._chunk_path(owner, session_id, chunk_id)

        def read() -> dict[str, Any] | None:
            try:
                raw = chunk.read_bytes()
            except FileNotFoundError:
                return None
            return _json_object(raw, session_id, f"transcript chunk {chunk_id}")

        return await self._run(read)

    async def _delete_chunk(self, owner: str, session_id: str, chunk_id: str) -> None:
        chunk = self._chunk_path(owner, session_id, chunk_id)
        await self._run(lambda: chunk.unlink(missing_ok=True))

    async def _chunk_ids(self, owner: str, session_id: str) -> list[str]:
        folder = self._chunk_dir(self.path(session_id, owner))
        return await self._run(lambda: [path.stem for path in folder.glob("*.json")] if folder.is_dir() else [])

    async def _list(self, owner: str, limit: int, after: ListingKey | None) -> list[dict[str, Any]]:
        directory = self._owner_dir(owner)

        def scan() -> list[dict[str, Any]]:
            found = []
            for path in directory.glob("*.json") if directory.is_dir() else ():
                try:
                    stored = self._read_file(path, path.stem)
                except SessionCorruptError:
                    continue  # logged; opening the session reports it
                if stored is not None and stored[0].get("kind") == "snapshot":
                    found.append(stored[0])
            return found

        return listing_order(await self._run(scan), limit, after)

    async def ping(self) -> None:
        if not os.access(self.directory, os.W_OK):
            raise StoreUnavailableError(
                "The session store cannot write its files.", internal=f"{self.directory} is not writable"
            )

    def _owner_dir(self, owner: str) -> Path:
        """The directory of ``owner``'s sessions (the store's own directory for no owner)."""
        return self._root / ".owners" / file_stem(owner) if owner else self._root

    def path(self, session_id: str, owner: str = "") -> Path:
        """The file that holds the session's snapshot (it may not exist yet); refuses a path that leaves
        the directory (a planted symlink, say). refuses a path that leaves the directory (a planted symlink, say).

        Raises:
            ValueError: The id is invalid, or its file is a link out of the directory.
        """
        self.validate_session_id(session_id)
        candidate = self._owner_dir(owner) / f"{file_stem(session_id)}.json"
        resolved = candidate.resolve()
        if resolved != candidate or not resolved.is_relative_to(self._root):
            raise ValueError(f"Session path escaped storage directory: {session_id!r}")
        return candidate

    @staticmethod
    def _chunk_dir(snapshot_path: Path) -> Path:
        return snapshot_path.with_suffix(".transcript")

    def _chunk_path(self, owner: str, session_id: str, chunk_id: str) -> Path:
        if not _CHUNK_ID.fullmatch(chunk_id):
            raise ValueError(f"invalid transcript chunk id {chunk_id!r}")
        return self._chunk_dir(self.path(session_id, owner)) / f"{chunk_id}.json"

    async def _write(
        self, owner: str, session_id: str, body: dict[str, Any], *, expected: str | None, conditional: bool
    ) -> str:
        path = self.path(session_id, owner)
        etag = uuid.uuid4().hex
        payload = encode_json({**body, "_etag": etag})

        def swap() -> str:
            with self._exclusive():
                current = self._read_file(path, session_id) if conditional else None
                if conditional and (current[1] if current else None) != expected:
                    raise SessionConflictError(f"Session '{session_id}' was changed by another request.")
                path.parent.mkdir(parents=True, exist_ok=True)
                replace_atomically(path, payload)
                return etag

        return await self._run(swap)

    @staticmethod
    def _read_file(path: Path, session_id: str) -> Stored | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        document = _json_object(raw, session_id, "snapshot")
        etag = document.pop("_etag", None)
        if not isinstance(etag, str):
            raise _corrupt_file(session_id, "snapshot", "no _etag")
        return document, etag

    @staticmethod
    async def _run(operation: Callable[[], T]) -> T:
        """Run file I/O in a thread; an OS failure is an unavailable store (the outcome may be unknown)."""
        try:
            return await asyncio.to_thread(operation)
        except OSError as exc:
            raise StoreUnavailableError(
                "The session store could not read or write its files; retry later.",
                internal=f"session directory I/O failed: {exc}",
            ) from exc

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


def replace_atomically(path: Path, payload: bytes) -> None:
    """Write ``path`` so that readers see the old file or the new one, never a partial one."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temp.write_bytes(payload)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _json_object(raw: bytes, session_id: str, what: str) -> dict[str, Any]:
    """A stored file's JSON object (UTF-8 only), or ``SessionCorruptError``."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # includes UnicodeDecodeError
        raise _corrupt_file(session_id, what, exc) from exc
    if not isinstance(value, dict):
        raise _corrupt_file(session_id, what, "not a JSON object")
    return value


def _corrupt_file(session_id: str, what: str, reason: object) -> SessionCorruptError:
    return SessionCorruptError(
        f"The stored session '{session_id}' cannot be read; it was left untouched.",
        internal=f"stored {what} of session {session_id!r} is not valid JSON: {reason}",
    )
