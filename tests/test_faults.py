"""Faults: writes whose answer is lost, crashes mid-write, races on existing sessions, outages."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import uuid
from dataclasses import replace

import aiohttp
import pytest
from agent_framework import AgentSession, Message
from azure.core.exceptions import ClientAuthenticationError, ServiceResponseError
from azure.core.pipeline.transport import AioHttpTransport
from azure.cosmos.aio import CosmosClient
from azure.cosmos.exceptions import CosmosHttpResponseError

from stateful_agent.errors import SessionConflictError, StoreUnavailableError
from stateful_agent.platform.agent import build_agent
from stateful_agent.state.documents import HISTORY_SOURCE_ID
from stateful_agent.stores import file as file_store
from stateful_agent.stores.cosmos import CosmosSnapshotStore, retry_after_seconds, store_error
from stateful_agent.stores.file import FileSnapshotStore
from stateful_agent.turns.service import TurnService
from testkit.support import ScriptedChatClient, settings_for
from tests.conftest import ROOT

# -- a write whose answer is lost -------------------------------------------------------------------------


class LosesAnswers(AioHttpTransport):
    """A real transport that lets chosen writes reach the server, then drops their answers.

    ``retried=True`` drops the connection (the Cosmos SDK then sends the write again, which collides
    with the first attempt's success); ``retried=False`` times out (the SDK gives up: outcome unknown).
    """

    def __init__(self, method: str, *, times: int = 1, retried: bool = True) -> None:
        super().__init__()
        self.method, self.remaining, self.retried = method, times, retried
        self.lost = 0

    async def send(self, request, **kwargs):
        response = await super().send(request, **kwargs)
        if self.remaining and request.method == self.method and "/docs" in request.url:
            self.remaining -= 1
            self.lost += 1
            await response.load_body()
            inner = aiohttp.ServerDisconnectedError() if self.retried else TimeoutError("read timed out")
            raise ServiceResponseError("the answer was lost", error=inner)
        return response


@pytest.fixture
async def cosmos_service(cosmos):
    """Factory: a Cosmos-backed service whose client uses a given transport."""
    built: list[CosmosClient] = []

    def make(transport: AioHttpTransport | None = None, **settings) -> TurnService:
        client = CosmosClient(
            cosmos["endpoint"],
            credential=cosmos["key"],
            enable_endpoint_discovery=False,
            **({"transport": transport} if transport else {}),
        )
        built.append(client)
        config = settings_for("cosmos", cosmos=cosmos, **settings)
        store = CosmosSnapshotStore(
            database=config.cosmos_database,
            container=config.cosmos_container,
            create_container=True,
            cosmos_client=client,
        )
        return TurnService(config, store, lambda: build_agent(config, ScriptedChatClient()))

    yield make
    for client in built:
        await client.close()


@pytest.mark.cosmos
@pytest.mark.parametrize("retried", [True, False], ids=["sdk-retries", "outcome-unknown"])
@pytest.mark.parametrize("existing", [False, True], ids=["new-session", "existing-session"])
async def test_a_cosmos_write_whose_answer_was_lost_is_recognised_as_ours(cosmos_service, retried, existing):
    transport = LosesAnswers("PUT" if existing else "POST", retried=retried)
    transport.remaining = 0  # not yet: the first turn (if any) goes through normally
    service = cosmos_service(transport)
    if existing:
        await service.run_turn("s1", "first")
    transport.remaining = 1

    result = await service.run_turn("s1", "the turn")  # no Idempotency-Key: only the write id can tell

    assert transport.lost == 1
    assert result.turn == (2 if existing else 1)
    described = await service.describe("s1")
    assert described["turns"] == result.turn
    assert [m["text"] for m in described["messages"]][-2:] == ["the turn", result.reply]  # stored exactly once


@pytest.mark.cosmos
async def test_a_lost_answer_of_a_transcript_chunk_write_is_recognised(cosmos_service):
    transport = LosesAnswers("POST")
    transport.remaining = 0
    service = cosmos_service(transport, compaction_max_messages=4)
    for i in range(2):
        await service.run_turn("s1", f"m{i}")
    transport.remaining = 1  # the next turn archives: its chunk write (a POST) loses its answer
    result = await service.run_turn("s1", "m2")
    assert transport.lost == 1
    assert result.turn == 3
    page = await service.messages("s1", cursor=None, limit=50)
    assert [m["text"] for m in page["messages"]] == ["m0", "reply 1", "m1", "reply 2", "m2", "reply 3"]


async def test_a_file_write_that_landed_before_an_os_error_is_recognised(make_service, monkeypatch):
    service = make_service("file")
    await service.run_turn("s1", "first")
    real = file_store.replace_atomically
    failures = []

    def lands_then_fails(path, payload):
        real(path, payload)
        if not failures:
            failures.append(path)
            raise OSError(5, "Input/output error after the rename")

    monkeypatch.setattr(file_store, "replace_atomically", lands_then_fails)
    result = await service.run_turn("s1", "second")
    assert failures
    assert result.turn == 2
    assert [m["text"] for m in (await service.describe("s1"))["messages"]] == ["first", "reply 1", "second", "reply 2"]


async def test_a_file_write_that_did_not_land_is_store_unavailable_and_changes_nothing(make_service, monkeypatch):
    service = make_service("file")
    await service.run_turn("s1", "first")
    before = await service.store.read("s1")

    def fails(path, payload):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(file_store, "replace_atomically", fails)
    with pytest.raises(StoreUnavailableError):
        await service.run_turn("s1", "second")
    assert await service.store.read("s1") == before


# -- a crash mid-write ------------------------------------------------------------------------------------

_CRASHING_WRITER = textwrap.dedent(
    """
    import asyncio, resource, signal, sys
    sys.path.insert(0, sys.argv[3])
    from agent_framework import AgentSession, Message
    from stateful_agent.stores.file import FileSnapshotStore

    session = AgentSession(session_id="s1")
    session.state["in_memory"] = {"messages": [Message(role="user", contents=["y" * 200_000])]}
    store = FileSnapshotStore(sys.argv[1])
    limit = int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # writing past the limit kills the process mid-write
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    asyncio.run(store.set("s1", session))
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
async def test_a_crash_mid_write_leaves_the_previous_file_store_version(tmp_path):
    store = FileSnapshotStore(tmp_path)
    before = AgentSession(session_id="s1")
    before.state[HISTORY_SOURCE_ID] = {"messages": [Message(role="user", contents=["x" * 1000])]}
    await store.set("s1", before)
    size = (tmp_path / "s1.json").stat().st_size

    child = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _CRASHING_WRITER, str(tmp_path), str(size + 50_000), str(ROOT)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGXFSZ, child.stderr.decode()[-2000:]  # it died in the middle of the write

    restored = await store.get("s1")
    assert restored is not None
    assert restored.state[HISTORY_SOURCE_ID]["messages"][0].text == "x" * 1000
    await store.set("s1", before)  # and the store still works: no stale lock, the partial temp file is ignored


# -- races on an existing session ---------------------------------------------------------------------------


async def test_racing_turns_on_an_existing_session_one_wins_the_rest_conflict(make_service, backend):
    gate = asyncio.Event()
    model = ScriptedChatClient(["first reply"], gate=gate)
    service = make_service(backend, model)
    gate.set()
    await service.run_turn("s1", "first")
    gate.clear()

    tasks = [asyncio.create_task(service.run_turn("s1", f"m{i}")) for i in range(10)]
    await model.wait_for_requests(11)  # all ten read the same stored version
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    wins = [(i, r) for i, r in enumerate(results) if not isinstance(r, BaseException)]
    assert len(wins) == 1
    assert all(isinstance(r, SessionConflictError) for r in results if isinstance(r, BaseException))
    ((winner, result),) = wins
    assert result.turn == 2
    described = await service.describe("s1")
    assert described["turns"] == 2
    assert [m["text"] for m in described["messages"]] == ["first", "first reply", f"m{winner}", result.reply]


async def test_racing_keyed_turns_on_an_existing_session_store_one_turn(make_service, backend):
    gate = asyncio.Event()
    model = ScriptedChatClient(gate=gate)
    service = make_service(backend, model)
    gate.set()
    await service.run_turn("s1", "first")
    gate.clear()
    tasks = [asyncio.create_task(service.run_turn("s1", "again", "k-1")) for _ in range(5)]
    await model.wait_for_requests(6)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert {(r.turn, r.reply) for r in results} == {(2, results[0].reply)}
    assert sum(not r.replayed for r in results) == 1
    assert (await service.describe("s1"))["turns"] == 2


# -- outages ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after_ms", "seconds"),
    [("2500", 3), ("1000", 1), ("1", 1), ("0", 1), ("12000.5", 13), (None, 2), ("soon", 2), ("-5", 2), ("nan", 2)],
)
def test_retry_after_follows_cosmos_retry_after_ms(retry_after_ms, seconds):
    assert retry_after_seconds(retry_after_ms) == seconds
    error = CosmosHttpResponseError(status_code=429, message="Request rate is large")
    error.headers = {} if retry_after_ms is None else {"x-ms-retry-after-ms": retry_after_ms}
    answer = store_error(error, "s1")
    assert answer.status == 503
    assert answer.headers["Retry-After"] == str(seconds)
    assert "busy" in answer.detail


async def test_without_a_key_the_store_signs_in_with_the_managed_identity(monkeypatch):
    created = []

    class RecordingCredential:
        def __init__(self, **kwargs):
            self.kwargs, self.scopes, self.closed = kwargs, [], False
            created.append(self)

        async def get_token(self, *scopes, **kwargs):
            self.scopes.extend(scopes)
            raise ClientAuthenticationError("no token in this test")

        async def close(self):
            self.closed = True

    import azure.identity.aio

    monkeypatch.setattr(azure.identity.aio, "DefaultAzureCredential", RecordingCredential)
    store = CosmosSnapshotStore(endpoint="https://127.0.0.1:9", managed_identity_client_id="client-id-1")
    with pytest.raises(StoreUnavailableError):
        await store.ping()
    assert [c.kwargs for c in created] == [{"managed_identity_client_id": "client-id-1"}]
    assert created[0].scopes
    assert all(scope.endswith("/.default") for scope in created[0].scopes)
    assert store.client is not None
    await store.close()
    assert created[0].closed
    assert store.client is None

    keyed = CosmosSnapshotStore(endpoint="https://127.0.0.1:9", key="c2VjcmV0LWtleQ==")
    assert "c2VjcmV0LWtleQ==" not in repr(vars(keyed))  # a key never prints
    with pytest.raises(StoreUnavailableError):
        await keyed.ping()
    await keyed.close()
    assert len(created) == 1  # a key means no Entra credential


async def test_injected_clients_are_not_closed_by_the_store(cosmos):
    async with CosmosClient(cosmos["endpoint"], credential=cosmos["key"], enable_endpoint_discovery=False) as client:
        settings = replace(settings_for("cosmos", cosmos=cosmos), cosmos_container=f"c-{uuid.uuid4().hex[:8]}")
        async with CosmosSnapshotStore(
            database=settings.cosmos_database,
            container=settings.cosmos_container,
            create_container=True,
            cosmos_client=client,
        ) as store:
            await store.set("s1", AgentSession())
        database = client.get_database_client(settings.cosmos_database)
        await database.get_container_client(settings.cosmos_container).read()  # the client still works


@pytest.mark.parametrize(
    ("environ", "reads_environment"),
    [({}, False), ({"HTTPS_PROXY": "http://proxy:3128"}, True), ({"http_proxy": "http://proxy:3128"}, True)],
)
def test_the_cosmos_transport_reads_proxy_settings_only_when_a_proxy_is_configured(environ, reads_environment):
    from stateful_agent.stores.cosmos import transport

    assert transport(environ)._use_env_settings is reads_environment  # azure-core's record of the choice
