"""Capture the documents the previous version stores, by running that version's own code.

The previous version (before per-user sessions, ``git`` commit ``bbe8692``) kept sessions in a Cosmos DB
container partitioned by ``/session_id`` (default name ``sessions``). This script extracts that commit's
``stateful_agent`` package with ``git archive``, runs real turns with it (offline echo model, compaction
small enough to archive transcript chunks, an ``Idempotency-Key``, an id that needs encoding) against the
local Cosmos DB server, and prints every item of its container as JSON, Cosmos system properties left out.
``tests/previous_version/sessions.json`` is its output; the migration tests load it into a container of
the previous layout.

    .venv/bin/python tests/previous_version/capture.py > tests/previous_version/sessions.json
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from testkit.servers import EMULATOR_KEY, clean_env, local_cosmos  # noqa: E402

PREVIOUS = "bbe8692"
DATABASE, CONTAINER = "agents", "sessions"

#: Run inside the previous version's package: turns through its own TurnService and Cosmos store.
TURNS = """
import asyncio
from stateful_agent.runtime import build_service
from stateful_agent.settings import load_settings

async def main():
    service = build_service(load_settings())
    for i in range(7):
        await service.run_turn("ada", f"Message {i} from Ada", key="k-ada-5" if i == 5 else None)
    await service.run_turn("ses/1 \\u00e4", "An id that needs encoding")
    await service.run_turn("ses/1 \\u00e4", "And a second turn")
    await service.run_turn("short", "Just one turn")
    await service.store.close()

asyncio.run(main())
"""


async def dump(endpoint: str) -> list[dict]:
    from azure.cosmos.aio import CosmosClient

    async with CosmosClient(endpoint, credential=EMULATOR_KEY, enable_endpoint_discovery=False) as client:
        container = client.get_database_client(DATABASE).get_container_client(CONTAINER)
        items = [item async for item in container.query_items("SELECT * FROM c")]
    return sorted(
        ({k: v for k, v in item.items() if not k.startswith("_")} for item in items),
        key=lambda item: (item["session_id"], item["id"]),
    )


def main() -> None:
    archive = subprocess.run(
        ["git", "archive", PREVIOUS, "stateful_agent"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with (
        tempfile.TemporaryDirectory() as folder,
        local_cosmos() as endpoint,
        tarfile.open(fileobj=io.BytesIO(archive)) as package,
    ):
        package.extractall(folder, filter="data")
        env = clean_env(
            MAF_SESSION_BACKEND="cosmos",
            COSMOS_ENDPOINT=endpoint,
            COSMOS_KEY=EMULATOR_KEY,
            COSMOS_DATABASE=DATABASE,
            COSMOS_CONTAINER=CONTAINER,
            COSMOS_CREATE_CONTAINER="true",
            COMPACTION_MAX_MESSAGES="4",
            PYTHONPATH=folder,
        )
        subprocess.run([sys.executable, "-c", TURNS], cwd=folder, env=env, check=True)
        items = asyncio.run(dump(endpoint))
    json.dump({"version": PREVIOUS, "container": CONTAINER, "items": items}, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
