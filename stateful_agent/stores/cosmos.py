"""Cosmos DB (NoSQL) store: one document per session, hierarchical partition key ``[/owner, /session_id]``.

A turn costs one point read and one conditional write (create, or replace with
``If-Match``); a turn that archives messages adds one transcript chunk write, in
the same logical partition. Listing an owner's sessions is one query on the owner
prefix of the key, served by the composite index on ``(updated_at, session_id)``,
so its cost follows the owner's sessions, not the number of owners. The async
client is created on first use and reused by the process; on first use the store
also reads the container's properties once and refuses a container of another
layout (the previous version's ``/session_id`` container, or MAF's): its sessions
move with ``python -m stateful_agent migrate``.
Authentication is Microsoft Entra ID (managed identity in Azure) unless a key is
configured for an emulator.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import math
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from agent_framework import SecretString, SessionStore
from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.core.pipeline.transport import AioHttpTransport
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceNotFoundError

from ..errors import (
    AgentServiceError,
    ConfigurationError,
    SessionConflictError,
    SessionTooLargeError,
    StoreUnavailableError,
)
from ..platform.telemetry import request_charge
from ..state.documents import ListingKey
from .base import SnapshotStore, Stored

logger = logging.getLogger(__name__)

_LITERAL_ID = re.compile(r"[A-Za-z0-9._:-]+")
_ENCODED_PREFIX = "~"  # never part of a literal id, so encoded and literal ids cannot collide
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_MAX_ITEM_ID_BYTES = 1023  # Cosmos DB's limit on an item id
#: The longest session id, in UTF-8 bytes: with the owner it stays inside Cosmos DB's 2,048-byte partition key.
MAX_PARTITION_KEY_BYTES = 1024
PARTITION_KEY_PATHS = ["/owner", "/session_id"]
#: The container's indexing policy: what reads and listings filter and sort on; ``infra/`` deploys the same.
INDEXING_POLICY: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [{"path": "/owner/?"}, {"path": "/session_id/?"}, {"path": "/kind/?"}, {"path": "/updated_at/?"}],
    "excludedPaths": [{"path": "/*"}],
    "compositeIndexes": [
        [{"path": "/updated_at", "order": "descending"}, {"path": "/session_id", "order": "descending"}],
    ],
}


def layout_problem(properties: Mapping[str, Any]) -> str | None:
    """What keeps a container (its properties, as Cosmos DB returns them) from holding this app's sessions:
    the partition key must be hierarchical on ``[/owner, /session_id]``, and listing needs the composite
    index on ``(updated_at, session_id)`` (both descending, or both ascending). ``None`` when it fits."""
    key = properties.get("partitionKey") or {}
    paths, kind = list(key.get("paths") or []), key.get("kind") or "Hash"
    if paths != PARTITION_KEY_PATHS or kind != "MultiHash":
        return (
            f"is partitioned by {paths} ({kind}); sessions need the hierarchical key {PARTITION_KEY_PATHS} (MultiHash)"
        )
    wanted = [(index["path"], index["order"]) for index in INDEXING_POLICY["compositeIndexes"][0]]
    reverse = {"descending": "ascending", "ascending": "descending"}
    accepted = (wanted, [(path, reverse[order]) for path, order in wanted])
    composites = (properties.get("indexingPolicy") or {}).get("compositeIndexes") or []
    have = [[(str(i.get("path")), str(i.get("order", "ascending")).lower()) for i in index] for index in composites]
    if not any(index in accepted for index in have):
        return (
            f"has no composite index on {[path for path, _ in wanted]} (descending), which listing sessions needs "
            "(infra/modules/cosmos.bicep deploys it)"
        )
    return None


_LISTING = (
    "SELECT TOP @limit c.session_id, c.title, c.turns, c.created_at, c.updated_at FROM c "
    "WHERE c.owner = @owner AND c.kind = 'snapshot'{after} ORDER BY c.updated_at DESC, c.session_id DESC"
)
_AFTER = " AND (c.updated_at < @updated_at OR (c.updated_at = @updated_at AND c.session_id < @session_id))"


def document_id(session_id: str) -> str:
    """The Cosmos item id of a session: the id itself, or a reversible base64url form.

    Cosmos forbids ``/ \\ ? #`` in ids; any id outside a safe alphabet is encoded. An id
    whose encoding would pass Cosmos DB's 1,023-byte id limit is stored under ``~~`` and its
    SHA-256 digest instead (the partition key still holds the id itself).
    """
    if _LITERAL_ID.fullmatch(session_id) and len(session_id) <= _MAX_ITEM_ID_BYTES:
        return session_id
    raw = session_id.encode("utf-8", "surrogatepass")
    encoded = _ENCODED_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
    if len(encoded) <= _MAX_ITEM_ID_BYTES:
        return encoded
    return _ENCODED_PREFIX * 2 + hashlib.sha256(raw).hexdigest()


def session_id_of(item_id: str) -> str | None:
    """Invert ``document_id``; ``None`` for a digest id (the document's ``session_id`` holds it)."""
    if not item_id.startswith(_ENCODED_PREFIX):
        return item_id
    if item_id.startswith(_ENCODED_PREFIX * 2):
        return None
    encoded = item_id[len(_ENCODED_PREFIX) :]
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8", "surrogatepass")


class CosmosSnapshotStore(SnapshotStore):
    """Snapshot documents in a Cosmos DB container partitioned by ``[/owner, /session_id]``.

    Like MAF's ``CosmosHistoryProvider``, it either builds its client from an endpoint and
    credential (and closes it), or uses a ``cosmos_client`` or ``container_client`` the caller
    created and owns. It is an async context manager.
    """

    backend = "cosmos"

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        database: str = "agents",
        container: str = "conversations",
        key: str | SecretString | None = None,
        managed_identity_client_id: str | None = None,
        create_container: bool = False,
        cosmos_client: CosmosClient | None = None,
        container_client: ContainerProxy | None = None,
        **options: Any,
    ) -> None:
        """Configure the store; nothing connects until the first request.

        Raises:
            ValueError: Neither ``endpoint``, ``cosmos_client`` nor ``container_client`` is given.
        """
        super().__init__(**options)
        if not (endpoint or cosmos_client or container_client):
            raise ValueError("CosmosSnapshotStore needs an endpoint, a cosmos_client or a container_client.")
        self.endpoint = endpoint
        self.database_name = database
        self.container_name = container_client.id if container_client is not None else container
        self._key = SecretString(key) if isinstance(key, str) else key
        self._client_id = managed_identity_client_id
        self._create_container = create_container
        self._client: CosmosClient | None = cosmos_client
        self._owns_client = cosmos_client is None and container_client is None
        self._credential: Any = None
        self._container: ContainerProxy | None = container_client
        self._checked: ContainerProxy | None = None  # the container, once its layout was checked
        self._layout_error: ConfigurationError | None = None
        self._open_lock = asyncio.Lock()

    @staticmethod
    def validate_session_id(session_id: str) -> None:
        """Any non-empty id that fits Cosmos DB's partition key limit together with its owner.

        Raises:
            ValueError: The id is empty, or longer than ``MAX_PARTITION_KEY_BYTES`` in UTF-8.
        """
        SessionStore.validate_session_id(session_id)
        if len(session_id.encode("utf-8", "surrogatepass")) > MAX_PARTITION_KEY_BYTES:
            raise ValueError(f"session_id must be at most {MAX_PARTITION_KEY_BYTES} bytes in UTF-8 for Cosmos DB")

    async def _read(self, owner: str, session_id: str) -> Stored | None:
        item = await self._read_item(owner, session_id, document_id(session_id))
        return None if item is None else (_without_system_properties(item), item["_etag"])

    async def _create(self, owner: str, session_id: str, body: dict[str, Any]) -> str:
        container = await self._open()
        return await self._write(session_id, container.create_item, body=self._body(session_id, body))

    async def _replace(self, owner: str, session_id: str, body: dict[str, Any], etag: str) -> str:
        container = await self._open()
        return await self._write(
            session_id,
            container.replace_item,
            item=document_id(session_id),
            body=self._body(session_id, body),
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )

    async def _upsert(self, owner: str, session_id: str, body: dict[str, Any]) -> str:
        container = await self._open()
        return await self._write(session_id, container.upsert_item, body=self._body(session_id, body))

    async def _remove(self, owner: str, session_id: str) -> None:
        container = await self._open()
        key = [owner, session_id]
        try:
            await _delete_if_present(container, document_id(session_id), key)
            # Then every other item of the logical partition: transcript chunks, and leftovers of lost races.
            leftovers = container.query_items(
                "SELECT c.id FROM c WHERE c.owner = @owner AND c.session_id = @session_id",
                parameters=[{"name": "@owner", "value": owner}, {"name": "@session_id", "value": session_id}],
                partition_key=key,
            )
            async for item in leftovers:
                await _delete_if_present(container, item["id"], key)
        except AzureError as exc:
            raise store_error(exc, session_id) from exc

    async def _create_chunk(self, owner: str, session_id: str, chunk_id: str, body: dict[str, Any]) -> None:
        container = await self._open()
        await self._write(session_id, container.create_item, body={"id": chunk_id, **body})

    async def _read_chunk(self, owner: str, session_id: str, chunk_id: str) -> dict[str, Any] | None:
        item = await self._read_item(owner, session_id, chunk_id)
        return None if item is None else _without_system_properties(item)

    async def _delete_chunk(self, owner: str, session_id: str, chunk_id: str) -> None:
        container = await self._open()
        try:
            await _delete_if_present(container, chunk_id, [owner, session_id])
        except AzureError as exc:
            raise store_error(exc, session_id) from exc

    async def _chunk_ids(self, owner: str, session_id: str) -> list[str]:
        container = await self._open()
        try:
            items = container.query_items(
                "SELECT c.id FROM c WHERE c.owner = @owner AND c.session_id = @session_id AND c.kind = 'transcript'",
                parameters=[{"name": "@owner", "value": owner}, {"name": "@session_id", "value": session_id}],
                partition_key=[owner, session_id],
            )
            return [item["id"] async for item in items]
        except AzureError as exc:
            raise store_error(exc, session_id) from exc

    async def _list(self, owner: str, limit: int, after: ListingKey | None) -> list[dict[str, Any]]:
        """One query on the owner's prefix of the partition key, served by the composite index."""
        container = await self._open()
        parameters: list[dict[str, Any]] = [{"name": "@limit", "value": limit}, {"name": "@owner", "value": owner}]
        if after is not None:
            parameters += [{"name": "@updated_at", "value": after[0]}, {"name": "@session_id", "value": after[1]}]
        query = _LISTING.format(after=_AFTER if after is not None else "")
        try:
            items = container.query_items(query, parameters=parameters, partition_key=[owner], max_item_count=limit)
            return [item async for item in items]
        except AzureError as exc:
            raise store_error(exc, None) from exc

    @property
    def client(self) -> CosmosClient | None:
        """The Cosmos client, once created (it is created once per process, on first use) or as injected."""
        return self._client

    async def ping(self) -> None:
        """Check the container answers (and, on first use, that it has this store's layout).

        Raises:
            ConfigurationError: The container is missing or has another layout.
            StoreUnavailableError: Cosmos DB cannot be reached.
        """
        container = await self._open()
        try:
            await container.read()
        except AzureError as exc:
            raise store_error(exc, None) from exc

    async def container(self, name: str | None = None) -> ContainerProxy:
        """A client of container ``name`` of this store's database (default: the store's own, checked), on
        the store's Cosmos client; for tools such as the migration that read other containers.

        Raises:
            ConfigurationError: The store's own container is missing or has another layout.
            StoreUnavailableError: Cosmos DB cannot be reached.
        """
        own = await self._open()
        if name is None or name == self.container_name:
            return own
        assert self._client is not None
        return self._client.get_database_client(self.database_name).get_container_client(name)

    async def close(self) -> None:
        """Close the client and credential this store created; injected clients stay open."""
        if self._owns_client:
            if self._client is not None:
                await self._client.close()
            if self._credential is not None:
                await self._credential.close()
            self._client = self._credential = self._container = self._checked = None

    @staticmethod
    def _body(session_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"id": document_id(session_id), **body}

    async def _read_item(self, owner: str, session_id: str, item_id: str) -> dict[str, Any] | None:
        container = await self._open()
        try:
            return await container.read_item(
                item_id, partition_key=[owner, session_id], response_hook=lambda headers, _: request_charge(headers)
            )
        except CosmosResourceNotFoundError as exc:
            request_charge(exc.headers)
            return None
        except AzureError as exc:
            raise store_error(exc, session_id) from exc

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
            request_charge(exc.headers)
            if exc.status_code in (404, 409, 412):  # 404: deleted by another request meanwhile
                raise SessionConflictError(f"Session '{session_id}' was changed by another request.") from exc
            if exc.status_code == 413:
                raise SessionTooLargeError("Cosmos DB refused the snapshot as too large.") from exc
            raise store_error(exc, session_id) from exc
        except AzureError as exc:
            raise store_error(exc, session_id) from exc
        request_charge(headers)
        return headers["etag"]

    async def _open(self) -> ContainerProxy:
        """The container client, created and checked once per process on first use.

        Raises:
            ConfigurationError: The container is missing or has another layout (checked again next time
                only when it was missing: a layout does not change under a running app).
            StoreUnavailableError: Cosmos DB cannot be reached.
        """
        if self._checked is not None:
            return self._checked
        if self._layout_error is not None:
            raise self._layout_error
        async with self._open_lock:
            if self._checked is None and self._layout_error is None:
                try:
                    if self._container is None:
                        self._container = await self._connect()
                    properties = await self._container.read()
                except CosmosResourceNotFoundError as exc:
                    raise ConfigurationError(
                        f"The Cosmos DB container '{self.container_name}' does not exist in database "
                        f"'{self.database_name}'. Deploy it (infra/) or set COSMOS_CREATE_CONTAINER=true locally.",
                        internal=f"Cosmos DB container {self.database_name}/{self.container_name} not found: {exc}",
                    ) from exc
                except AzureError as exc:
                    raise store_error(exc, None) from exc
                problem = layout_problem(properties)
                if problem:
                    self._layout_error = ConfigurationError(
                        f"The Cosmos DB container '{self.container_name}' {problem}. It is not this app's layout "
                        "(the previous version's, or MAF's history container?): nothing was read or written. "
                        f"Point COSMOS_CONTAINER at a container of the current layout and move the old sessions "
                        f"with `python -m stateful_agent migrate --from-container {self.container_name} "
                        "--to-container <new container>` (docs/upgrading.md).",
                        internal=f"container {self.database_name}/{self.container_name}: {problem}",
                    )
                    raise self._layout_error
                self._checked = self._container
        if self._layout_error is not None:
            raise self._layout_error
        assert self._checked is not None
        return self._checked

    async def _connect(self) -> ContainerProxy:
        if self._client is None:
            self._client = self._new_client()
        database = self._client.get_database_client(self.database_name)
        if self._create_container:
            database = await self._client.create_database_if_not_exists(self.database_name)
            return await database.create_container_if_not_exists(
                self.container_name,
                partition_key=PartitionKey(path=PARTITION_KEY_PATHS, kind="MultiHash"),
                indexing_policy=INDEXING_POLICY,
                default_ttl=-1,
            )
        return database.get_container_client(self.container_name)

    def _new_client(self) -> CosmosClient:
        assert self.endpoint is not None  # checked in __init__ when no client was given
        if self._key is not None:
            credential: Any = self._key.get_secret_value()
        else:
            from azure.identity.aio import DefaultAzureCredential

            credential = self._credential = DefaultAzureCredential(managed_identity_client_id=self._client_id)
        loopback = urlparse(self.endpoint).hostname in _LOOPBACK_HOSTS
        # A local emulator cannot answer endpoint discovery with reachable regional addresses.
        return CosmosClient(
            self.endpoint,
            credential=credential,
            enable_endpoint_discovery=not loopback,
            user_agent_suffix="stateful-agent-functions",
            transport=transport(),
        )


def transport(environ: Mapping[str, str] | None = None) -> AioHttpTransport:
    """The HTTP transport of the Cosmos client: aiohttp, reading proxy settings from the environment only
    when one is configured (otherwise its per-request ``.netrc`` and proxy lookups cost two thread-pool
    round trips on every Cosmos request)."""
    env = os.environ if environ is None else environ
    proxied = any(env.get(name) for name in _PROXY_VARIABLES)
    return AioHttpTransport(use_env_settings=proxied)


def _without_system_properties(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "id" and not k.startswith("_")}


async def _delete_if_present(container: ContainerProxy, item_id: str, key: list[str]) -> None:
    with contextlib.suppress(CosmosResourceNotFoundError):
        await container.delete_item(item_id, partition_key=key)


def retry_after_seconds(retry_after_ms: object, default: int = 2) -> int:
    """Whole seconds for ``Retry-After`` from Cosmos DB's ``x-ms-retry-after-ms`` (rounded up, at least 1)."""
    try:
        milliseconds = float(str(retry_after_ms))
    except ValueError:
        return default
    return max(1, math.ceil(milliseconds / 1000)) if math.isfinite(milliseconds) and milliseconds >= 0 else default


def store_error(exc: AzureError, session_id: str | None) -> AgentServiceError:
    """Log a Cosmos failure with its details; return the error a client may see."""
    status = getattr(exc, "status_code", None)
    internal = f"Cosmos DB request failed (session {session_id!r}, status {status}): {exc}"
    if status == 400:  # the request does not fit the container: most often a container of an older layout
        return ConfigurationError(
            "Cosmos DB refused the request as malformed. The container must be partitioned by "
            "[/owner, /session_id]; move older sessions with `python -m stateful_agent migrate` (docs/upgrading.md).",
            internal=internal,
        )
    retry_after = retry_after_seconds((getattr(exc, "headers", None) or {}).get("x-ms-retry-after-ms"))
    state = "busy" if status == 429 else "unavailable"
    return StoreUnavailableError(
        f"The session store is {state}; retry later.", retry_after_seconds=retry_after, internal=internal
    )
