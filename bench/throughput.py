"""Throughput through the local host over HTTP: many sessions in parallel on the local Cosmos server."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx

from testkit.servers import EMULATOR_KEY, ROOT, clean_env, free_port

from .store_cost import percentile


async def _wait_ready(base: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError("the local host exited")
            try:
                if (await client.get(f"{base}/api/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the local host did not start")


async def _drive(base: str, sessions: int, turns: int, concurrency: int) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    failures = 0
    limit = asyncio.Semaphore(concurrency)

    async def conversation(client: httpx.AsyncClient, session_id: str) -> None:
        nonlocal failures
        for turn in range(turns):  # a conversation's turns are sequential, like a chat user's
            async with limit:
                started = time.perf_counter()
                response = await client.post(
                    f"{base}/api/sessions/{session_id}/turns", json={"message": f"turn {turn}"}
                )
                latencies.append(time.perf_counter() - started)
                failures += response.status_code != 200

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        started = time.perf_counter()
        await asyncio.gather(*(conversation(client, f"tp-{i}") for i in range(sessions)))
        elapsed = time.perf_counter() - started
    return latencies, failures, elapsed


def run(cosmos_endpoint: str, sessions: int, turns: int, concurrency: int) -> dict[str, Any]:
    port = free_port()
    env = clean_env(
        MAF_SESSION_BACKEND="cosmos",
        COSMOS_ENDPOINT=cosmos_endpoint,
        COSMOS_KEY=EMULATOR_KEY,
        COSMOS_DATABASE=f"tp-{uuid.uuid4().hex[:6]}",
        COSMOS_CREATE_CONTAINER="true",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "stateful_agent.devhost", "--port", str(port), "--settings-file", ""],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(_wait_ready(base, process))
        latencies, failures, elapsed = asyncio.run(_drive(base, sessions, turns, concurrency))
    finally:
        process.terminate()
        process.wait(timeout=10)
    return {
        "sessions": sessions,
        "turns_per_session": turns,
        "concurrency": concurrency,
        "turns_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "failed": failures,
    }
