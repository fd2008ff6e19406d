"""Fixtures: a real Cosmos DB protocol server and a real PostgreSQL server on loopback, and services per backend.

The Cosmos tests use ``@vercel/cosmosdb-server`` (installed by ``npm ci``), started
once per test session on a free loopback port, or the endpoint in
``COSMOS_TEST_ENDPOINT``/``COSMOS_TEST_KEY`` (the official emulator or a real
account). The PostgreSQL tests start the server programs of the machine's PostgreSQL
(Debian's ``postgresql`` package, which ``scripts/test`` installs) in a temporary
directory, once per test session; each service gets a database of its own. In CI
(``CI`` set) a server that cannot start fails the run.
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

from stateful_agent import runtime  # noqa: E402
from testkit.servers import EMULATOR_KEY, LocalPostgres, ServerUnavailable, local_cosmos, local_postgres  # noqa: E402
from testkit.support import ScriptedChatClient, service_for, settings_for  # noqa: E402


def _unavailable(reason: str, server: str = "Cosmos", remedy: str = "run `npm ci`") -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{server} tests must run in CI: {reason}", pytrace=False)
    pytest.skip(f"local {server} server unavailable: {reason} ({remedy})")


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


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server for this test session (``settings_for`` gives each service a database)."""
    try:
        with local_postgres() as server:
            yield server
    except ServerUnavailable as error:
        _unavailable(str(error), "PostgreSQL", "apt-get install postgresql, or set POSTGRES_BIN_DIR")


COSMOS = pytest.param("cosmos", marks=pytest.mark.cosmos)
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
BACKENDS = ["memory", "file", COSMOS, POSTGRES]
DURABLE_BACKENDS = ["file", COSMOS, POSTGRES]
#: The backends shared by several processes or machines (conditional writes on a server).
SERVER_BACKENDS = [COSMOS, POSTGRES]


def servers_for(request: pytest.FixtureRequest, backend: str) -> dict:
    """The server fixture a backend needs, as ``settings_for`` keyword arguments."""
    if backend in ("cosmos", "postgres"):
        return {backend: request.getfixturevalue(backend)}
    return {}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn (Cosmos against the local server)."""
    return request.param


@pytest.fixture
def backend_settings(request: pytest.FixtureRequest, tmp_path: Path):
    """Build settings for a backend name (pulls in the Cosmos server only when asked)."""

    def build(backend: str, **extra):
        return settings_for(backend, tmp_path=tmp_path, **servers_for(request, backend), **extra)

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
        await service.close()
    await runtime.install(None)
