"""Session stores, chosen by ``MAF_SESSION_BACKEND``; each module imports only its own SDK."""

from __future__ import annotations

from ..platform.settings import Settings
from .base import Record, SnapshotStore

__all__ = ["Record", "SnapshotStore", "create_store"]


def create_store(settings: Settings) -> SnapshotStore:
    """Build the configured store (no I/O: clients connect on first use)."""
    options = {"ttl_seconds": settings.session_ttl_seconds, "max_snapshot_bytes": settings.max_snapshot_bytes}
    if settings.backend == "cosmos":
        from .cosmos import CosmosSnapshotStore

        return CosmosSnapshotStore(
            endpoint=settings.cosmos_endpoint or "",
            database=settings.cosmos_database,
            container=settings.cosmos_container,
            key=settings.cosmos_key,
            managed_identity_client_id=settings.azure_client_id,
            create_container=settings.cosmos_create_container,
            **options,
        )
    if settings.backend == "postgres":
        from .postgres import PostgresSnapshotStore

        return PostgresSnapshotStore(
            settings.postgres_dsn or "",
            managed_identity_client_id=settings.azure_client_id,
            create_schema=settings.postgres_create_schema,
            pool_size=settings.postgres_pool_size,
            **options,
        )
    if settings.backend == "memory":
        from .memory import MemorySnapshotStore

        return MemorySnapshotStore(**options)
    from .file import FileSnapshotStore

    return FileSnapshotStore(settings.session_dir, **options)
