"""Cosmos DB (NoSQL) store: one document per session, partition key ``/session_id``.

A turn costs one point read and one conditional write (create, or replace with
``If-Match``); a turn that archives messages adds one transcript chunk write, in
the same partition. The async client is created on first use and reused by the process.
Authentication is Microsoft Entra ID (managed identity in Azure) unless a key is
configured for an emulator.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
from typing import Any
from urllib.parse import urlparse

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceNotFoundError

from ..errors import SessionConflictError, SessionTooLargeError, StoreUnavailableError
from .base import Record, SnapshotStore

logger = logging.getLogger(__name__)

_LITERAL_ID = re.compile(r"[A-Za-z0-9._:-]+")
_ENCODED_PREFIX = "~"  # never part of a literal id, so encoded and literal ids cannot collide
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


def document_id(session_id: str) -> str:
    """The Cosmos item id of a session: the id itself, or a reversible base64url form.

    Cosmos forbids ``/ \\ ? #`` in ids; any id outside a safe alphabet is encoded.
    """
    if _LITERAL_ID.fullmatch(session_id):
        return session_id
    encoded = base64.urlsafe_b64encode(session_id.encode("utf-8")).decode("ascii").rstrip("=")
    return _ENCODED_PREFIX + encoded


def session_id_of(item_id: str) -> str:
    """Invert ``document_id``."""
    if not item_id.startswith(_ENCODED_PREFIX):
        return item_id
    encoded = item_id[len(_ENCODED_PREFIX) :]
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")


class CosmosSnapshotStore(SnapshotStore):
    """Snapshot documents in a Cosmos DB container partitioned by ``/session_id``."""

    backend = "cosmos"

    def __init__(
        self,
        *,
        endpoint: str,
        database: str,
        container: str,
        key: str | None = None,
        managed_identity_client_id: str | None = None,
        create_container: bool = False,
        client_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._client_options = client_options or {}  # extra CosmosClient keywords, e.g. a raw_response_hook
        self.endpoint = endpoint
        self.database_name = database
        self.container_name = container
        self._key = key
        self._client_id = managed_identity_client_id
        self._create_container = create_container
        self._client: CosmosClient | None = None
        self._credential: Any = None
        self._container: ContainerProxy | None = None
        self._open_lock = asyncio.Lock()

    async def read(self, session_id: str) -> Record | None:
        container = await self._open()
        try:
            item = await container.read_item(document_id(session_id), partition_key=session_id)
        except CosmosResourceNotFoundError:
            return None
        except AzureError as exc:
            raise _store_error(exc, session_id) from exc
        return Record(_without_system_properties(item), item["_etag"])

    async def create(self, session_id: str, document: dict[str, Any]) -> str:
        container = await self._open()
        return await self._write(session_id, container.create_item, body=self._body(session_id, document))

    async def replace(self, session_id: str, document: dict[str, Any], etag: str) -> str:
        container = await self._open()
        return await self._write(
            session_id,
            container.replace_item,
            item=document_id(session_id),
            body=self._body(session_id, document),
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )

    async def upsert(self, session_id: str, document: dict[str, Any]) -> str:
        container = await self._open()
        return await self._write(session_id, container.upsert_item, body=self._body(session_id, document))

    async def remove(self, session_id: str) -> None:
        container = await self._open()
        try:
            await _delete_if_present(container, document_id(session_id), session_id)
            # Then every other item of the partition: transcript chunks, and leftovers of lost races.
            leftovers = container.query_items(
                "SELECT c.id FROM c WHERE c.session_id = @session_id",
                parameters=[{"name": "@session_id", "value": session_id}],
                partition_key=session_id,
            )
            async for item in leftovers:
                await _delete_if_present(container, item["id"], session_id)
        except AzureError as exc:
            raise _store_error(exc, session_id) from exc

    async def write_chunk(self, session_id: str, chunk_id: str, document: dict[str, Any]) -> None:
        container = await self._open()
        await self._write(session_id, container.create_item, body={"id": chunk_id, **document})

    async def read_chunk(self, session_id: str, chunk_id: str) -> dict[str, Any] | None:
        container = await self._open()
        try:
            item = await container.read_item(chunk_id, partition_key=session_id)
        except CosmosResourceNotFoundError:
            return None
        except AzureError as exc:
            raise _store_error(exc, session_id) from exc
        return _without_system_properties(item)

    async def delete_chunk(self, session_id: str, chunk_id: str) -> None:
        container = await self._open()
        try:
            await _delete_if_present(container, chunk_id, session_id)
        except AzureError as exc:
            raise _store_error(exc, session_id) from exc

    async def ping(self) -> None:
        container = await self._open()
        try:
            await container.read()
        except AzureError as exc:
            raise _store_error(exc, None) from exc

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._credential is not None:
            await self._credential.close()
        self._client = self._credential = self._container = None

    @staticmethod
    def _body(session_id: str, document: dict[str, Any]) -> dict[str, Any]:
        return {"id": document_id(session_id), **document}

    async def _write(self, session_id: str, operation: Any, **kwargs: Any) -> str:
        headers: dict[str, str] = {}
        try:
            await operation(
                no_response=True,
                response_hook=lambda response_headers, _: headers.update(
                    (name.lower(), value) for name, value in response_headers.items()
                ),
                **kwargs,
            )
        except CosmosHttpResponseError as exc:
            if exc.status_code in (404, 409, 412):  # 404: deleted by another request meanwhile
                raise SessionConflictError(f"Session '{session_id}' was changed by another request.") from exc
            if exc.status_code == 413:
                raise SessionTooLargeError("Cosmos DB refused the snapshot as too large.") from exc
            raise _store_error(exc, session_id) from exc
        except AzureError as exc:
            raise _store_error(exc, session_id) from exc
        return headers["etag"]

    async def _open(self) -> ContainerProxy:
        """The container client, created once per process on first use."""
        if self._container is not None:
            return self._container
        async with self._open_lock:
            if self._container is None:
                try:
                    self._container = await self._connect()
                except AzureError as exc:
                    raise _store_error(exc, None) from exc
        return self._container

    async def _connect(self) -> ContainerProxy:
        if self._key:
            credential: Any = self._key
        else:
            from azure.identity.aio import DefaultAzureCredential

            credential = self._credential = DefaultAzureCredential(managed_identity_client_id=self._client_id)
        loopback = urlparse(self.endpoint).hostname in _LOOPBACK_HOSTS
        # A local emulator cannot answer endpoint discovery with reachable regional addresses.
        self._client = CosmosClient(
            self.endpoint,
            credential=credential,
            enable_endpoint_discovery=not loopback,
            user_agent_suffix="stateful-agent-functions",
            **self._client_options,
        )
        database = self._client.get_database_client(self.database_name)
        if self._create_container:
            database = await self._client.create_database_if_not_exists(self.database_name)
            return await database.create_container_if_not_exists(
                self.container_name, partition_key=PartitionKey(path="/session_id"), default_ttl=-1
            )
        return database.get_container_client(self.container_name)


def _without_system_properties(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "id" and not k.startswith("_")}


async def _delete_if_present(container: ContainerProxy, item_id: str, session_id: str) -> None:
    with contextlib.suppress(CosmosResourceNotFoundError):
        await container.delete_item(item_id, partition_key=session_id)


def _store_error(exc: AzureError, session_id: str | None) -> StoreUnavailableError:
    """Log a Cosmos failure with its details; return the error a client may see."""
    status = getattr(exc, "status_code", None)
    logger.error("Cosmos DB request failed (session %r, status %s): %s", session_id, status, exc)
    retry_ms = (getattr(exc, "headers", None) or {}).get("x-ms-retry-after-ms")
    retry_after = max(1, int(int(retry_ms) / 1000 + 0.999)) if retry_ms and str(retry_ms).isdigit() else 2
    state = "busy" if status == 429 else "unavailable"
    return StoreUnavailableError(f"The session store is {state}; retry later.", retry_after_seconds=retry_after)
