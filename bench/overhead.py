"""Framework overhead per turn with no I/O: restore, validate, window, prompt, serialize.

A turn through the real pipeline with the in-memory store (which still serializes
every document to JSON and back) and the zero-latency echo model, at a given number
of messages (compaction off, so the window really is that long, or the default window),
on an instance that restores the whole window, or on the one that wrote it (warm).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from stateful_agent.platform.agent import build_agent
from stateful_agent.platform.models import EchoChatClient
from stateful_agent.platform.settings import Settings
from stateful_agent.stores.memory import MemorySnapshotStore
from stateful_agent.turns.service import TurnService

from .store_cost import SESSION, percentile


async def per_turn_us(
    length: int, repetitions: int, *, compaction: str = "none", warm: bool = False
) -> dict[str, float]:
    """p50/p95 of a turn at ``length`` messages. ``warm``: on the instance that wrote the version the turn
    reads (its window is reused); otherwise on one that restores the whole window (``SESSION_CACHE_MB=0``)."""
    cache = Settings().session_cache_bytes if warm else 0
    settings = Settings(backend="memory", compaction_strategy=compaction, session_cache_bytes=cache)
    service = TurnService(settings, MemorySnapshotStore(), lambda: build_agent(settings, EchoChatClient()))
    for i in range(length // 2 - warm):
        await service.run_turn(SESSION, f"message {i}")
    saved = await service.store.read(SESSION)
    samples = []
    for i in range(repetitions):
        if warm:  # this instance writes the version the measured turn reads
            await service.run_turn(SESSION, "the previous turn")
        started = time.perf_counter()
        await service.run_turn(SESSION, f"measured {i}")
        samples.append(time.perf_counter() - started)
        await service.store.upsert(SESSION, saved.document)
    return {
        "p50_us": round(statistics.median(samples) * 1e6),
        "p95_us": round(percentile(samples, 0.95) * 1e6),
    }


async def telemetry_cost(repetitions: int, length: int = 100) -> dict[str, Any]:
    """Per-turn overhead with telemetry off (nothing configured), then exporting every span and metric.

    Run last: it installs OpenTelemetry's global providers for the rest of the process. The exporter
    discards what it is given, so what is measured is the app's and MAF's instrumentation, not a network.
    """
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from stateful_agent.platform import telemetry

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    off = await per_turn_us(length, repetitions, compaction="messages")
    telemetry.configure({}, extra=[Discard(), InMemoryMetricReader()])
    on = await per_turn_us(length, repetitions, compaction="messages")
    return {"messages": length, "off": off, "exporting": on, "ratio_p50": round(on["p50_us"] / off["p50_us"], 2)}


async def run(lengths: list[int], repetitions: int) -> dict[str, Any]:
    results: dict[str, Any] = {str(n): await per_turn_us(n, repetitions) for n in lengths}
    results["with_default_compaction"] = {
        str(n): await per_turn_us(n, repetitions, compaction="messages") for n in lengths
    }
    results["with_default_compaction_warm"] = {
        str(n): await per_turn_us(n, repetitions, compaction="messages", warm=True) for n in lengths
    }
    return results
