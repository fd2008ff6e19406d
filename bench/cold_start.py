"""Cold start: fresh processes importing ``function_app`` and serving their first turn.

Wall times are measured by the parent from process spawn to exit, so they include
the interpreter's own start; the bare import of the libraries a turn needs is
measured the same way, in the same run, as the floor to compare with.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient

from stateful_agent.stores.cosmos import INDEXING_POLICY, PARTITION_KEY_PATHS
from testkit.servers import EMULATOR_KEY, ROOT, clean_env, fake_openai


def _child(mode: str, env: dict[str, str], *python_options: str) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, *python_options, "-m", "bench.cold_child", mode],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"cold process ({mode}) failed: {completed.stderr[-2000:]}")
    return completed


def _spawn(mode: str, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    completed = _child(mode, env)
    wall = (time.perf_counter() - started) * 1000
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["wall_ms"] = round(wall, 1)
    return result


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 1)


def _series(mode: str, env: dict[str, str], processes: int) -> dict[str, Any]:
    runs = [_spawn(mode, env) for _ in range(processes)]
    if mode == "turn":
        assert all(r["status"] == 200 for r in runs), runs
    summary = {key: _median(runs, key) for key in runs[0] if key not in ("status",)}
    summary["processes"] = processes
    return summary


def import_breakdown(env: dict[str, str], mode: str, processes: int = 5, top: int = 10) -> list[dict[str, Any]]:
    """The heaviest top-level packages of a cold process, by own import time (``-X importtime``), the
    median of ``processes`` processes per package."""
    samples: dict[str, list[int]] = defaultdict(list)
    for _ in range(processes):
        completed = _child(mode, env, "-X", "importtime")
        per_package: dict[str, int] = defaultdict(int)
        for line in completed.stderr.splitlines():
            match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s+(\S+)", line.strip())
            if match:
                per_package[_package(match.group(2))] += int(match.group(1))
        for name, us in per_package.items():
            samples[name].append(us)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ranked = sorted(medians.items(), key=lambda item: -item[1])[:top]
    return [{"package": name, "ms": round(us / 1000, 1)} for name, us in ranked]


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] in ("azure", "azurefunctions", "agent_framework") else parts[0]


async def _create_container(endpoint: str, database: str, container: str) -> None:
    async with CosmosClient(endpoint, credential=EMULATOR_KEY, enable_endpoint_discovery=False) as client:
        db = await client.create_database_if_not_exists(database)
        await db.create_container_if_not_exists(
            container,
            partition_key=PartitionKey(path=PARTITION_KEY_PATHS, kind="MultiHash"),
            indexing_policy=INDEXING_POLICY,
        )


def run(cosmos_endpoint: str, processes: int) -> dict[str, Any]:
    base_env = clean_env()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder, fake_openai() as openai_url:
        file_env = {**base_env, "MAF_SESSION_BACKEND": "file", "MAF_SESSION_DIR": str(Path(folder) / "s")}
        database, container = f"cold-{uuid.uuid4().hex[:6]}", "sessions"
        asyncio.run(_create_container(cosmos_endpoint, database, container))
        cosmos_env = {
            **base_env,
            "MAF_SESSION_BACKEND": "cosmos",
            "COSMOS_ENDPOINT": cosmos_endpoint,
            "COSMOS_KEY": EMULATOR_KEY,
            "COSMOS_DATABASE": database,
            "COSMOS_CONTAINER": container,
            "MODEL_PROVIDER": "openai",
            "OPENAI_BASE_URL": f"{openai_url}/v1",
            "OPENAI_MODEL": "bench",
            "OPENAI_API_KEY": "unused",
        }
        results["import_function_app"] = _series("import", file_env, processes)
        results["bare_import_of_functions_host_libraries"] = _series("host", base_env, processes)
        results["first_turn_file_echo"] = _series("turn", file_env, processes)
        results["first_turn_cosmos_openai"] = _series("turn", cosmos_env, processes)
        results["bare_import_of_turn_libraries"] = _series("libs", base_env, processes)
        results["import_breakdown_function_app"] = import_breakdown(file_env, "import", processes)
        results["import_breakdown_first_turn"] = import_breakdown(cosmos_env, "turn", processes)
    results["ratio_first_turn_to_bare_imports"] = round(
        results["first_turn_cosmos_openai"]["wall_ms"] / results["bare_import_of_turn_libraries"]["wall_ms"], 3
    )
    return results
