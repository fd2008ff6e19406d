"""Move the previous version's sessions into a container of the current layout.

The previous version kept each session (its snapshot document and transcript chunks) in a container
partitioned by ``/session_id``; sessions now live under the hierarchical key ``[/owner, /session_id]``.
``migrate`` copies every session of an old container into the store's container, as one owner's:

- each snapshot and each chunk it lists is validated with the app's own models (and restored) before
  anything of its session is written; a session that does not validate is reported and skipped, whole;
- chunks are written before the snapshot that lists them, so a stopped run never leaves a session that
  lists a missing chunk; the copy keeps the document's ``write_id``, so a second run recognises a session
  it copied (``already there``) and copies each session exactly once;
- a session the target already holds (copied by an earlier run, and maybe continued since) is never
  overwritten, unless the target's is an older version of it (fewer turns, written earlier: the old
  app ran on after the first run), which is replaced conditionally on the version read; another
  session of the same id (created at another time) is reported and kept;
- the source is only read: nothing in it is changed or deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from ..errors import ConfigurationError, SessionConflictError, SessionCorruptError
from ..state.documents import SessionDocument, TranscriptChunk, chunk_id, title_of
from .cosmos import CosmosSnapshotStore, document_id, store_error

logger = logging.getLogger(__name__)

#: The partition key of the previous version's containers (and of MAF's ``CosmosHistoryProvider``'s).
PREVIOUS_PARTITION_KEY = ["/session_id"]


@dataclass
class Skipped:
    """An item of the source that was not copied, and why."""

    id: str
    session_id: str | None
    reason: str


@dataclass
class MigrationReport:
    """What a run did (or, with ``dry_run``, would do)."""

    source: str
    target: str
    owner: str
    dry_run: bool = False
    copied: int = 0
    already_there: int = 0
    chunks_copied: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "owner": self.owner,
            "dry_run": self.dry_run,
            "copied": self.copied,
            "already_there": self.already_there,
            "chunks_copied": self.chunks_copied,
            "skipped": [vars(item) for item in self.skipped],
        }

    def summary(self) -> str:
        verb = "would copy" if self.dry_run else "copied"
        return (
            f"{self.source} -> {self.target} (owner {self.owner!r}): {verb} {self.copied} session(s) "
            f"({self.chunks_copied} transcript chunk(s)), {self.already_there} already there, "
            f"{len(self.skipped)} item(s) skipped"
        )


async def migrate(
    store: CosmosSnapshotStore,
    source: str,
    *,
    owner: str = "",
    dry_run: bool = False,
    progress: Callable[[MigrationReport, int], None] | None = None,
) -> MigrationReport:
    """Copy every session of container ``source`` (the previous layout) into ``store``'s container.

    ``progress`` is called after every session with the report so far and how many sessions were read.

    Raises:
        ConfigurationError: ``source`` is missing, is the target, or is not of the previous layout; or the
            target is missing or not of the current layout.
        StoreUnavailableError: Cosmos DB cannot be reached (the run can simply be repeated).
    """
    report = MigrationReport(source, store.container_name, owner, dry_run)
    if source == store.container_name:
        raise ConfigurationError("--from-container names the target container itself.")
    await store.container()  # the target: present and of the current layout
    old = await store.container(source)
    try:
        properties = await old.read()
    except CosmosResourceNotFoundError as exc:
        raise ConfigurationError(f"No container '{source}' in database '{store.database_name}'.") from exc
    except AzureError as exc:
        raise store_error(exc, None) from exc
    paths = list((properties.get("partitionKey") or {}).get("paths") or [])
    if paths != PREVIOUS_PARTITION_KEY:
        raise ConfigurationError(
            f"Container '{source}' is partitioned by {paths}, not the previous version's {PREVIOUS_PARTITION_KEY}: "
            "there is nothing to migrate from it."
        )

    listed: set[tuple[str, str]] = set()
    chunks: list[tuple[str, str]] = []
    sessions = 0
    try:
        async for item in old.query_items("SELECT * FROM c"):
            kind, item_id, session_id = item.get("kind"), str(item.get("id")), item.get("session_id")
            if kind == "transcript":
                chunks.append((str(session_id), item_id))
                continue
            if kind != "snapshot":
                reason = f"not a session document of this app (kind {kind!r})"
                report.skipped.append(Skipped(item_id, _text(session_id), reason))
                continue
            sessions += 1
            await _session(store, old, item, report, listed)
            if progress is not None:
                progress(report, sessions)
    except AzureError as exc:
        raise store_error(exc, None) from exc
    for session_id, item_id in chunks:
        if (session_id, item_id) not in listed:
            reason = "transcript chunk no snapshot lists (left by a turn that lost a race, or by a skipped session)"
            report.skipped.append(Skipped(item_id, session_id, reason))
    return report


async def _session(
    store: CosmosSnapshotStore, old: Any, item: dict[str, Any], report: MigrationReport, listed: set
) -> None:
    """Validate one session of the source with its chunks, then copy it unless the target has it."""
    item_id, session_id = str(item.get("id")), item.get("session_id")
    if not isinstance(session_id, str) or not session_id or item_id != document_id(session_id):
        report.skipped.append(Skipped(item_id, _text(session_id), "snapshot whose id does not match its session_id"))
        return
    try:
        document = SessionDocument.parse(_body(item), session_id)
        session = document.restore()
        copies = []
        for seq, ref in enumerate(document.transcript):
            chunk_item_id = chunk_id(seq, ref.nonce)
            listed.add((session_id, chunk_item_id))
            try:
                stored = await old.read_item(chunk_item_id, partition_key=session_id)
            except CosmosResourceNotFoundError:
                raise SessionCorruptError(
                    internal=f"it lists transcript chunk {chunk_item_id}, which is missing"
                ) from None
            chunk = TranscriptChunk.parse(_body(stored), session_id)
            if chunk.seq != seq or len(chunk.messages) != ref.count:
                raise SessionCorruptError(internal=f"transcript chunk {chunk_item_id} does not match the snapshot")
            chunk.restore()
            copies.append((chunk_item_id, chunk.model_copy(update={"owner": report.owner})))
    except SessionCorruptError as error:
        reason = f"does not validate: {error.internal or error.detail}"
        report.skipped.append(Skipped(item_id, session_id, reason))
        logger.warning("Session %r skipped: %s", session_id, reason)
        return
    # The previous version stored no title: give the copy the one its next turn would (the listing shows it).
    title = document.title or title_of(session)
    migrated = document.model_copy(update={"owner": report.owner, "title": title})

    try:
        existing = await store.read(session_id, report.owner)
    except SessionCorruptError as error:
        reason = f"the target holds a document of this session that does not validate; left as it is ({error.internal})"
        report.skipped.append(Skipped(item_id, session_id, reason))
        return
    if existing is not None and existing.document.created_at != document.created_at:
        reason = "the target holds another session of this id (created at another time); kept"
        report.skipped.append(Skipped(item_id, session_id, reason))
        return
    if existing is not None and not _older(existing.document, document):
        report.already_there += 1  # copied before (and maybe continued since): the target's stays
        return
    if report.dry_run:
        report.copied += 1
        report.chunks_copied += len(copies)
        return
    try:
        for chunk_item_id, chunk in copies:
            await _copy_chunk(store, session_id, chunk_item_id, chunk)
        if existing is None:
            await store.create(session_id, migrated)
        else:
            await store.replace(session_id, migrated, existing.etag)
    except SessionConflictError:
        reason = "the target's copy changed while it was being migrated; kept (run the migration again)"
        report.skipped.append(Skipped(item_id, session_id, reason))
        return
    report.copied += 1
    report.chunks_copied += len(copies)


async def _copy_chunk(store: CosmosSnapshotStore, session_id: str, chunk_item_id: str, chunk: TranscriptChunk) -> None:
    """Write a chunk; one this migration wrote before (same ``write_id``) counts as written."""
    try:
        await store.write_chunk(session_id, chunk_item_id, chunk)
    except SessionConflictError:
        there = await store.read_chunk(session_id, chunk_item_id, chunk.owner)
        if there is None or there.write_id != chunk.write_id:
            raise


def _older(target: SessionDocument, source: SessionDocument) -> bool:
    """Whether the target's document (of the same session) is an earlier version than the source's: the
    previous version ran on after an earlier migration."""
    return target.turns < source.turns and target.updated_at < source.updated_at


def _body(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "id" and not k.startswith("_")}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
