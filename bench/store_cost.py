"""Per-turn store cost against conversation length, every contender measured turn by turn, interleaved.

Contenders ("subjects"), each a whole turn (load, run with the zero-latency echo model, save) except the floor:

- ``ours``: our snapshot store through the real pipeline, default window (``COMPACTION_STRATEGY=messages``),
  on an instance that restores the whole window from the store (``SESSION_CACHE_MB=0``: a cold instance).
- ``ours_warm``: the same on the instance that wrote the version the turn reads (the default cache on), so
  the window it restored last is reused: its rewind ends with an untimed turn, as a warm instance's would.
- ``ours_full``: the same with every message in the prompt (``COMPACTION_STRATEGY=none``): equal terms with
  the peer, whose users load the whole history into every prompt.
- ``raw``: the physical floor, the azure-cosmos SDK alone reading and conditionally replacing the very
  document bytes ``ours`` stores, with the same client set-up.
- ``postgres``: our store on PostgreSQL (default window, a warm instance as ``ours_warm``), when a
  PostgreSQL server is given; its "requests" are SQL statements.
- ``peer``: MAF's per-message ``CosmosHistoryProvider``, as its users wire it.
- ``file``: MAF's ``FileSessionStore`` (a local, unversioned baseline).

Each measured turn starts from the same stored conversation: the state is rewound after it, outside the
measurement, so the length stays exact. The subjects take turns (one turn each, round after round), so a
noisy moment hurts them all alike. Turns that archive are measured separately, without rewinding.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from agent_framework import Agent, AgentSession, FileSessionStore, InMemoryHistoryProvider
from agent_framework_azure_cosmos import CosmosHistoryProvider
from azure.core import MatchConditions
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient
from psycopg_pool import AsyncConnectionPool

from stateful_agent.platform.agent import build_agent
from stateful_agent.platform.models import EchoChatClient
from stateful_agent.platform.settings import Settings
from stateful_agent.stores.cosmos import CosmosSnapshotStore, document_id, transport
from stateful_agent.stores.postgres import PostgresSnapshotStore
from stateful_agent.turns.service import TurnService
from testkit.servers import EMULATOR_KEY

from .meter import Meter

SESSION = "bench-session"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(latencies: list[float], usages: list[Any]) -> dict[str, float]:
    turns = len(latencies)
    return {
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 3),
        "requests_per_turn": round(sum(u.requests for u in usages) / turns, 2),
        "bytes_per_turn": round(sum(u.bytes_sent + u.bytes_received for u in usages) / turns),
        "bytes_sent_per_turn": round(sum(u.bytes_sent for u in usages) / turns),
        "bytes_received_per_turn": round(sum(u.bytes_received for u in usages) / turns),
        "request_charge_per_turn": round(sum(u.request_charge for u in usages) / turns, 2),
        "estimated_ru_per_turn": round(sum(u.estimated_ru for u in usages) / turns, 1),
    }


@dataclass
class Subject:
    """One contender: a turn, how to rewind after it, and the meter counting its Cosmos traffic."""

    turn: Callable[[str], Awaitable[None]]
    rewind: Callable[[], Awaitable[None]]
    meter: Meter


async def _nothing() -> None:
    return None


class BatchAsUpserts:
    """The local server lacks transactional batches: send the peer's batch as concurrent upserts,
    counted as the one request real Cosmos DB would take."""

    def __init__(self, container: Any, meter: Meter) -> None:
        self._container, self._meter = container, meter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    async def execute_item_batch(self, batch_operations: list, partition_key: Any, **kwargs: Any) -> list:
        await asyncio.gather(*(self._container.upsert_item(*args) for _, args in batch_operations))
        self._meter.adjust_requests(1 - len(batch_operations))
        return []


def _client(endpoint: str, meter: Meter) -> CosmosClient:
    """A Cosmos client as the app builds one (its transport), counting what it sends and receives."""
    return CosmosClient(
        endpoint,
        credential=EMULATOR_KEY,
        enable_endpoint_discovery=False,
        raw_response_hook=meter.hook,
        transport=transport(),
    )


@asynccontextmanager
async def _ours(
    endpoint: str, database: str, length: int, compaction: str, *, warm: bool = False
) -> AsyncIterator[Subject]:
    meter = Meter()
    meter.paused = True
    client = _client(endpoint, meter)
    try:
        store = CosmosSnapshotStore(
            database=database, container=f"ours-{uuid.uuid4().hex[:8]}", create_container=True, cosmos_client=client
        )
        cache = Settings().session_cache_bytes if warm else 0
        settings = Settings(backend="cosmos", compaction_strategy=compaction, session_cache_bytes=cache)
        service = TurnService(settings, store, lambda: build_agent(settings, EchoChatClient()))
        for i in range(length // 2 - warm):
            await service.run_turn(SESSION, f"message {i}")
        saved = await store.read(SESSION)

        async def rewind() -> None:
            await store.upsert(SESSION, saved.document)
            if warm:  # this instance writes the version the measured turn reads
                await service.run_turn(SESSION, "the previous turn")

        async def turn(message: str) -> None:
            await service.run_turn(SESSION, message)

        if warm and saved is not None:
            await rewind()  # the first measured turn, too, reads a version this instance wrote
        yield Subject(turn, rewind, meter)
    finally:
        await client.close()


def _counting_connection(meter: Meter) -> type[psycopg.AsyncConnection]:
    class Counting(psycopg.AsyncConnection):
        async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            meter.statement()
            return await super().execute(query, params, **kwargs)

    return Counting


@asynccontextmanager
async def _postgres(dsn: str, length: int) -> AsyncIterator[Subject]:
    """``ours_warm`` on PostgreSQL: the same turn, pipeline and rewind, with a pool counting statements."""
    meter = Meter()
    meter.paused = True
    pool = AsyncConnectionPool(
        dsn, connection_class=_counting_connection(meter), kwargs={"autocommit": True}, min_size=1, open=False
    )
    await pool.open()
    try:
        store = PostgresSnapshotStore(pool=pool, create_schema=True)
        settings = Settings(backend="postgres")
        service = TurnService(settings, store, lambda: build_agent(settings, EchoChatClient()))
        for i in range(length // 2 - 1):
            await service.run_turn(SESSION, f"message {i}")
        saved = await store.read(SESSION)

        async def rewind() -> None:
            await store.upsert(SESSION, saved.document)
            await service.run_turn(SESSION, "the previous turn")

        async def turn(message: str) -> None:
            await service.run_turn(SESSION, message)

        await rewind()
        yield Subject(turn, rewind, meter)
    finally:
        await pool.close()


@asynccontextmanager
async def _raw(endpoint: str, database: str, length: int) -> AsyncIterator[Subject]:
    """The floor: a point read and a conditional replace of ``ours``' own document, by the SDK alone."""
    meter = Meter()
    meter.paused = True
    client = _client(endpoint, meter)
    try:
        store = CosmosSnapshotStore(
            database=database, container=f"raw-{uuid.uuid4().hex[:8]}", create_container=True, cosmos_client=client
        )
        settings = Settings(backend="cosmos")
        service = TurnService(settings, store, lambda: build_agent(settings, EchoChatClient()))
        for i in range(length // 2):
            await service.run_turn(SESSION, f"message {i}")
        container = client.get_database_client(database).get_container_client(store.container_name)
        item_id, key = document_id(SESSION), ["", SESSION]
        body = {k: v for k, v in (await container.read_item(item_id, partition_key=key)).items() if k[0] != "_"}

        async def turn(_: str) -> None:
            item = await container.read_item(item_id, partition_key=key)
            await container.replace_item(
                item_id, body, etag=item["_etag"], match_condition=MatchConditions.IfNotModified, no_response=True
            )

        yield Subject(turn, _nothing, meter)
    finally:
        await client.close()


@asynccontextmanager
async def _peer(endpoint: str, database: str, length: int) -> AsyncIterator[Subject]:
    meter = Meter()
    meter.paused = True
    async with _client(endpoint, meter) as client:
        db = await client.create_database_if_not_exists(database)
        container = await db.create_container_if_not_exists(
            f"peer-{uuid.uuid4().hex[:8]}", partition_key=PartitionKey(path="/session_id")
        )
        provider = CosmosHistoryProvider(container_client=BatchAsUpserts(container, meter))
        agent = Agent(client=EchoChatClient(), name="assistant", context_providers=[provider])
        session = AgentSession(session_id=SESSION)
        for i in range(length // 2):
            await agent.run(f"message {i}", session=session)

        async def ids() -> set[str]:
            query = "SELECT c.id FROM c WHERE c.session_id = @s"
            items = container.query_items(query, parameters=[{"name": "@s", "value": SESSION}], partition_key=SESSION)
            return {item["id"] async for item in items}

        kept = await ids()

        async def rewind() -> None:
            for item_id in await ids() - kept:
                await container.delete_item(item_id, partition_key=SESSION)

        async def turn(message: str) -> None:
            await agent.run(message, session=AgentSession(session_id=SESSION))  # a cold process: nothing cached

        yield Subject(turn, rewind, meter)


@asynccontextmanager
async def _file(length: int) -> AsyncIterator[Subject]:
    with tempfile.TemporaryDirectory() as folder:
        store = FileSessionStore(Path(folder))
        agent = Agent(client=EchoChatClient(), name="assistant", context_providers=[InMemoryHistoryProvider()])
        session = AgentSession(session_id=SESSION)
        for i in range(length // 2):
            await agent.run(f"message {i}", session=session)
        await store.set(SESSION, session)

        async def rewind() -> None:
            await store.set(SESSION, session)

        async def turn(message: str) -> None:
            loaded = await store.get(SESSION)
            await agent.run(message, session=loaded)
            await store.set(SESSION, loaded)

        meter = Meter()
        meter.paused = True
        yield Subject(turn, rewind, meter)


async def interleave(subjects: dict[str, Subject], repetitions: int) -> dict[str, dict[str, float]]:
    """Measure ``repetitions`` turns of every subject, one turn each per round."""
    latencies: dict[str, list[float]] = {name: [] for name in subjects}
    usages: dict[str, list[Any]] = {name: [] for name in subjects}
    for i in range(repetitions):
        for name, subject in subjects.items():
            subject.meter.take()
            subject.meter.paused = False
            started = time.perf_counter()
            await subject.turn(f"measured message {i}")
            latencies[name].append(time.perf_counter() - started)
            subject.meter.paused = True
            usages[name].append(subject.meter.take())
            await subject.rewind()
    return {name: summarize(latencies[name], usages[name]) for name in subjects}


async def archiving(endpoint: str, database: str, turns: int) -> dict[str, float]:
    """``ours`` over consecutive turns, nothing rewound: the mean of all turns, and of the archiving ones."""
    async with _ours(endpoint, database, 0, "messages", warm=True) as subject:
        latencies, usages = [], []
        for i in range(turns):
            subject.meter.take()
            subject.meter.paused = False
            started = time.perf_counter()
            await subject.turn(f"message {i}")
            latencies.append(time.perf_counter() - started)
            subject.meter.paused = True
            usages.append(subject.meter.take())
    archived = [t for t, u in zip(latencies, usages, strict=True) if u.requests > 2]
    return {
        "turns": turns,
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
        "archiving_turns": len(archived),
        "archiving_mean_ms": round(statistics.fmean(archived) * 1000, 3) if archived else None,
        "requests_per_turn": round(sum(u.requests for u in usages) / turns, 3),
        "estimated_ru_per_turn": round(sum(u.estimated_ru for u in usages) / turns, 1),
    }


async def run(
    endpoint: str, lengths: list[int], repetitions: int, postgres: Callable[[], str] | None = None
) -> dict[str, Any]:
    """Every subject at every length, interleaved; ratios to the peer and to the floor. ``postgres`` makes
    a new PostgreSQL database and returns its connection string (the ``postgres`` subject runs when given)."""
    database = f"bench-{uuid.uuid4().hex[:8]}"
    names = ("ours", "ours_warm", "ours_full", "raw", "peer", "file", *(("postgres",) if postgres else ()))
    results: dict[str, Any] = {name: {} for name in names}
    for length in lengths:
        async with AsyncExitStack() as stack:
            subjects = {
                "ours": await stack.enter_async_context(_ours(endpoint, database, length, "messages")),
                "ours_warm": await stack.enter_async_context(_ours(endpoint, database, length, "messages", warm=True)),
                "ours_full": await stack.enter_async_context(_ours(endpoint, database, length, "none")),
                "raw": await stack.enter_async_context(_raw(endpoint, database, length)),
                "peer": await stack.enter_async_context(_peer(endpoint, database, length)),
                "file": await stack.enter_async_context(_file(length)),
            }
            if postgres:
                subjects["postgres"] = await stack.enter_async_context(_postgres(postgres(), length))
            for name, figures in (await interleave(subjects, repetitions)).items():
                results[name][length] = figures
    results["file"] = {n: {k: v for k, v in r.items() if k in ("p50_ms", "p95_ms")} for n, r in results["file"].items()}
    if postgres:
        keep = ("p50_ms", "p95_ms", "requests_per_turn")
        results["postgres"] = {n: {k: v for k, v in r.items() if k in keep} for n, r in results["postgres"].items()}

    def ratio(a: str, b: str, length: int, key: str = "p50_ms") -> float:
        return round(results[a][length][key] / results[b][length][key], 3)

    results["ratios_ours_to_peer"] = {
        length: {
            "p50": ratio("ours", "peer", length),
            "requests": ratio("ours", "peer", length, "requests_per_turn"),
            "bytes": ratio("ours", "peer", length, "bytes_per_turn"),
            "p50_equal_window": ratio("ours_full", "peer", length),
        }
        for length in lengths
    }
    results["ratios_ours_to_raw"] = {length: ratio("ours", "raw", length) for length in lengths}
    results["ratios_ours_warm_to_raw"] = {length: ratio("ours_warm", "raw", length) for length in lengths}
    first, last = lengths[0], lengths[-1]
    results["ours_growth_p50"] = round(results["ours"][last]["p50_ms"] / results["ours"][first]["p50_ms"], 3)
    results["archiving"] = await archiving(endpoint, database, max(60, repetitions))
    return results
