"""Tools from an MCP server: what a turn costs in requests and time, with a real server on loopback.

The echo model (zero latency) and the in-memory store, with one MCP server (the official SDK's, streamable
HTTP) configured as ``AGENT_MCP_SERVERS``: the first turn of a process (it connects and lists the tools), warm
turns that call no MCP tool (they must send nothing to the server), turns that call one, and the same warm
turns with no server configured, all in one run.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from stateful_agent.platform.agent import build_agent
from stateful_agent.platform.mcp import ToolServers
from stateful_agent.platform.mcp_config import McpServer
from stateful_agent.platform.models import EchoChatClient
from stateful_agent.platform.settings import Settings
from stateful_agent.stores.memory import MemorySnapshotStore
from stateful_agent.turns.service import TurnService
from testkit.mcp_servers import ToolServer

from .store_cost import percentile


def lookup(item: str) -> str:
    """Look an item up."""
    return f"{item}: 42"


class CountingStore(MemorySnapshotStore):
    """The memory store, counting the requests a networked store would send (reads and writes)."""

    requests = 0

    async def _read(self, *args: Any) -> Any:
        self.requests += 1
        return await super()._read(*args)

    async def _create(self, *args: Any) -> Any:
        self.requests += 1
        return await super()._create(*args)

    async def _replace(self, *args: Any) -> Any:
        self.requests += 1
        return await super()._replace(*args)


def _service(server: ToolServer | None) -> tuple[TurnService, CountingStore]:
    settings = Settings(backend="memory")
    store = CountingStore()
    servers = None
    if server is not None:
        config = McpServer(name="bench", url=server.url, read_only=True)
        servers = ToolServers([config])
    return TurnService(settings, store, lambda: build_agent(settings, EchoChatClient()), servers), store


async def _turns(service: TurnService, count: int, message: str, prefix: str) -> list[float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        await service.run_turn(f"{prefix}-{i % 4}", message)
        samples.append(time.perf_counter() - started)
    return samples


def _us(samples: list[float]) -> dict[str, float]:
    return {"p50_us": round(statistics.median(samples) * 1e6), "p95_us": round(percentile(samples, 0.95) * 1e6)}


async def run(turns: int) -> dict[str, Any]:
    with ToolServer("bench", {"lookup": lookup}) as server:
        service, store = _service(server)
        started = time.perf_counter()
        await service.run_turn("first", "hello")
        first_ms = (time.perf_counter() - started) * 1000
        connect_requests = len(server.seen)

        seen, stored = len(server.seen), store.requests
        plain = await _turns(service, turns, "hello again", "plain")
        plain_mcp = (len(server.seen) - seen) / turns
        plain_store = (store.requests - stored) / turns

        seen, stored = len(server.seen), store.requests
        calling = await _turns(service, turns, 'call lookup {"item": "x"}', "calls")
        calling_mcp = (len(server.seen) - seen) / turns
        calling_store = (store.requests - stored) / turns
        await service.close()

    without, _ = _service(None)
    await without.run_turn("first", "hello")
    baseline = await _turns(without, turns, "hello again", "plain")
    await without.close()
    return {
        "first_turn_ms": round(first_ms, 1),
        "first_turn_mcp_requests": connect_requests,
        "turn_without_mcp_call": _us(plain),
        "turn_with_no_server_configured": _us(baseline),
        "ratio_warm_turn_to_no_server": round(statistics.median(plain) / statistics.median(baseline), 3),
        "turn_with_one_mcp_call": _us(calling),
        "mcp_requests_per_turn_without_call": plain_mcp,
        "mcp_requests_per_turn_with_one_call": calling_mcp,
        "store_requests_per_turn": plain_store,
        "store_requests_per_turn_with_one_call": calling_store,
        "turns": turns,
    }
