"""Fixtures: a real Cosmos DB protocol server on loopback, and services per backend.

The Cosmos tests use ``@vercel/cosmosdb-server`` (installed by ``npm ci``), started
once per test session on a free loopback port, or the endpoint in
``COSMOS_TEST_ENDPOINT``/``COSMOS_TEST_KEY`` (the official emulator or a real
account). In CI (``CI`` set) a server that cannot start fails the run.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import EMULATOR_KEY, ServerUnavailable, local_cosmos  # noqa: E402
from stateful_agent import runtime  # noqa: E402
from tests.support import ScriptedChatClient, service_for, settings_for  # noqa: E402


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Cosmos tests must run in CI: {reason}", pytrace=False)
    pytest.skip(f"local Cosmos server unavailable: {reason} (run `npm ci`)")


@pytest.fixture(scope="session")
def cosmos() -> Iterator[dict[str, str]]:
    """Endpoint, key and a fresh database name for this test session."""
    database = f"test-{uuid.uuid4().hex[:8]}"
    if os.environ.get("COSMOS_TEST_ENDPOINT"):
        yield {
            "endpoint": os.environ["COSMOS_TEST_ENDPOINT"],
            "key": os.environ.get("COSMOS_TEST_KEY", EMULATOR_KEY),
            "database": database,
        }
        return
    try:
        with local_cosmos() as endpoint:
            yield {"endpoint": endpoint, "key": EMULATOR_KEY, "database": database}
    except ServerUnavailable as error:
        _unavailable(str(error))


BACKENDS = ["memory", "file", pytest.param("cosmos", marks=pytest.mark.cosmos)]
DURABLE_BACKENDS = ["file", pytest.param("cosmos", marks=pytest.mark.cosmos)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn (Cosmos against the local server)."""
    return request.param


@pytest.fixture
def backend_settings(request: pytest.FixtureRequest, tmp_path: Path):
    """Build settings for a backend name (pulls in the Cosmos server only when asked)."""

    def build(backend: str, **extra):
        cosmos = request.getfixturevalue("cosmos") if backend == "cosmos" else None
        return settings_for(backend, cosmos=cosmos, tmp_path=tmp_path, **extra)

    return build


@pytest.fixture
async def make_service(backend_settings):
    """Factory: the app's real service for a backend, with a scripted model; closed after the test."""
    built = []

    def make(backend: str, client: ScriptedChatClient | None = None, **extra):
        service = service_for(backend_settings(backend, **extra), client or ScriptedChatClient())
        built.append(service)
        return service

    yield make
    for service in built:
        await service.store.close()
    await runtime.install(None)
