"""Per-turn store cost against conversation length: our snapshot store, MAF's per-message
``CosmosHistoryProvider`` (the peer) and MAF's ``FileSessionStore`` (a local baseline).

Every turn is a whole turn (load, run with the zero-latency echo model, save). Each
measured turn starts from the same stored conversation of the target length: the
state is rewound after it, outside the measurement, so the length stays exact.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from agent_framework import Agent, AgentSession, FileSessionStore, InMemoryHistoryProvider
from agent_framework_azure_cosmos import CosmosHistoryProvider
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient

from stateful_agent.agent import build_agent
from stateful_agent.models import EchoChatClient
from stateful_agent.settings import Settings
from stateful_agent.stores.cosmos import CosmosSnapshotStore, transport
from stateful_agent.turns import TurnService

from .meter import Meter
from .servers import EMULATOR_KEY

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
    }


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


async def _measure(turn, rewind, meter: Meter, repetitions: int) -> dict[str, float]:
    latencies, usages = [], []
    for i in range(repetitions):
        meter.take()
        started = time.perf_counter()
        await turn(f"measured message {i}")
        latencies.append(time.perf_counter() - started)
        usages.append(meter.take())
        meter.paused = True
        await rewind()
        meter.paused = False
    return summarize(latencies, usages)


async def ours(endpoint: str, database: str, length: int, repetitions: int) -> dict[str, float]:
    """The snapshot store through the real turn pipeline (default compaction)."""
    meter = Meter()
    client = CosmosClient(
        endpoint,
        credential=EMULATOR_KEY,
        enable_endpoint_discovery=False,
        raw_response_hook=meter.hook,
        transport=transport(),  # the app's own transport (no per-request proxy lookups)
    )
    store = CosmosSnapshotStore(
        database=database, container=f"ours-{uuid.uuid4().hex[:8]}", create_container=True, cosmos_client=client
    )
    settings = Settings(backend="cosmos")
    service = TurnService(settings, store, lambda: build_agent(settings, EchoChatClient()))
    try:
        meter.paused = True
        for i in range(length // 2):
            await service.run_turn(SESSION, f"message {i}")
        saved = await store.read(SESSION)
        meter.paused = False

        async def rewind() -> None:
            await store.upsert(SESSION, saved.document)

        async def turn(message: str) -> None:
            await service.run_turn(SESSION, message)

        return await _measure(turn, rewind, meter, repetitions)
    finally:
        await client.close()


async def peer(endpoint: str, database: str, length: int, repetitions: int) -> dict[str, float]:
    """MAF's CosmosHistoryProvider (one document per message) in an otherwise identical agent."""
    meter = Meter()
    async with CosmosClient(
        endpoint, credential=EMULATOR_KEY, enable_endpoint_discovery=False, raw_response_hook=meter.hook
    ) as client:
        meter.paused = True
        db = await client.create_database_if_not_exists(database)
        container = await db.create_container_if_not_exists(
            f"peer-{uuid.uuid4().hex[:8]}", partition_key=PartitionKey(path="/session_id")
        )
        provider = CosmosHistoryProvider(container_client=BatchAsUpserts(container, meter))
        agent = Agent(client=EchoChatClient(), name="assistant", context_providers=[provider])
        session = AgentSession(session_id=SESSION)
        for i in range(length // 2):
            await agent.run(f"message {i}", session=session)
        kept = {
            item["id"]
            async for item in container.query_items(
                "SELECT c.id FROM c WHERE c.session_id = @s",
                parameters=[{"name": "@s", "value": SESSION}],
                partition_key=SESSION,
            )
        }
        meter.paused = False

        async def rewind() -> None:
            added = [
                item["id"]
                async for item in container.query_items(
                    "SELECT c.id FROM c WHERE c.session_id = @s",
                    parameters=[{"name": "@s", "value": SESSION}],
                    partition_key=SESSION,
                )
                if item["id"] not in kept
            ]
            for item_id in added:
                await container.delete_item(item_id, partition_key=SESSION)

        async def turn(message: str) -> None:
            await agent.run(message, session=AgentSession(session_id=SESSION))  # a cold process: nothing cached

        return await _measure(turn, rewind, meter, repetitions)


async def file_baseline(length: int, repetitions: int) -> dict[str, float]:
    """MAF's FileSessionStore (last writer wins, no versions) around the same agent."""
    with tempfile.TemporaryDirectory() as folder:
        store = FileSessionStore(Path(folder))
        agent = Agent(client=EchoChatClient(), name="assistant", context_providers=[InMemoryHistoryProvider()])
        session = AgentSession(session_id=SESSION)
        for i in range(length // 2):
            await agent.run(f"message {i}", session=session)
        await store.set(SESSION, session)
        meter = Meter()

        async def rewind() -> None:
            await store.set(SESSION, session)

        async def turn(message: str) -> None:
            loaded = await store.get(SESSION)
            await agent.run(message, session=loaded)
            await store.set(SESSION, loaded)

        result = await _measure(turn, rewind, meter, repetitions)
        return {k: v for k, v in result.items() if k in ("p50_ms", "p95_ms")}


async def run(endpoint: str, lengths: list[int], repetitions: int) -> dict[str, Any]:
    database = f"bench-{uuid.uuid4().hex[:8]}"
    results: dict[str, Any] = {"ours": {}, "peer": {}, "file": {}}
    for length in lengths:
        results["ours"][length] = await ours(endpoint, database, length, repetitions)
        results["peer"][length] = await peer(endpoint, database, length, repetitions)
        results["file"][length] = await file_baseline(length, repetitions)
    results["ratios_ours_to_peer"] = {
        length: {
            "p50": round(results["ours"][length]["p50_ms"] / results["peer"][length]["p50_ms"], 3),
            "requests": round(
                results["ours"][length]["requests_per_turn"] / results["peer"][length]["requests_per_turn"], 3
            ),
            "bytes": round(results["ours"][length]["bytes_per_turn"] / results["peer"][length]["bytes_per_turn"], 3),
        }
        for length in lengths
    }
    first, last = lengths[0], lengths[-1]
    results["ours_growth_p50"] = round(results["ours"][last]["p50_ms"] / results["ours"][first]["p50_ms"], 3)
    return results
