"""The stored document is one typed model, validated where it is read; MAF's SessionStore contract."""

from __future__ import annotations

import json
import math

import httpx
import pytest
from agent_framework import AgentSession, FileSessionStore, Message

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from stateful_agent.errors import SessionCorruptError
from stateful_agent.state.documents import HISTORY_SOURCE_ID, SessionDocument, history
from stateful_agent.stores.file import FileSnapshotStore, file_stem
from stateful_agent.stores.memory import MemorySnapshotStore
from testkit.support import ScriptedChatClient, read_raw, write_raw
from tests.conftest import BACKENDS

#: Malformed values of the fields a turn carries forward; each must be reported, never written on.
CORRUPTIONS = {
    "transcript is a string": {"transcript": "garbage"},
    "transcript entry of the wrong shape": {"transcript": [["abcdef12"]]},
    "transcript entry with a bad nonce": {"transcript": [["../../x", 2]]},
    "transcript count is not a number": {"transcript": [["abcdef12", "2"]]},
    "idempotency is a string": {"idempotency": "garbage"},
    "idempotency entry is a list": {"idempotency": [["k", "f", 1, 0, 1]]},
    "idempotency entry misses a field": {"idempotency": [{"key": "k", "fingerprint": "f", "turn": 1}]},
    "idempotency entry points past the transcript": {
        "idempotency": [{"key": "k", "fingerprint": "f", "turn": 1, "first": 0, "count": 99}]
    },
    "turns is a string": {"turns": "1"},
    "turns is negative": {"turns": -1},
    "turns is a boolean": {"turns": True},
    "created_at is a number": {"created_at": 5},
    "unknown field": {"surprise": 1},
    "another session's document": {"session_id": "other"},
    "write_id is not a write id": {"write_id": 42},
    "ttl is zero": {"ttl": 0},
    "snapshot is a list": {"snapshot": []},
    "snapshot of another type": {"snapshot": {"type": "thread", "session_id": "s1", "state": {}}},
    "history is not messages": {
        "snapshot": {"type": "session", "session_id": "s1", "state": {"in_memory": {"messages": ["hi", 3]}}}
    },
}
ROUTES = ["turn", "keyed turn", "streamed turn", "get", "messages"]


async def _call(client: httpx.AsyncClient, route: str) -> httpx.Response:
    turn = "/api/sessions/s1/turns"
    if route == "turn":
        return await client.post(turn, json={"message": "again"})
    if route == "keyed turn":
        return await client.post(turn, json={"message": "again"}, headers={"Idempotency-Key": "k-2"})
    if route == "streamed turn":
        return await client.post(turn, json={"message": "again"}, headers={"Accept": "text/event-stream"})
    if route == "get":
        return await client.get("/api/sessions/s1")
    return await client.get("/api/sessions/s1/messages")


def _cases() -> list:
    """Every corruption on every backend; in Cosmos DB ``session_id`` is the partition key, so a document
    with another ``session_id`` is another session's item and cannot be planted under this one."""
    cases = []
    for param in BACKENDS:
        backend = param if isinstance(param, str) else param.values[0]
        marks = () if isinstance(param, str) else param.marks
        for name, fields in CORRUPTIONS.items():
            if not (backend == "cosmos" and "session_id" in fields):
                cases.append(pytest.param(backend, name, marks=marks, id=f"{backend}-{name}"))
    return cases


@pytest.mark.parametrize(("backend_name", "corruption"), _cases())
async def test_a_malformed_field_is_session_corrupt_on_every_route_and_never_overwritten(
    make_service, backend_name, corruption
):
    backend = backend_name
    model = ScriptedChatClient()
    service = make_service(backend, model)
    await runtime.install(service)
    await service.run_turn("s1", "hello")
    document = (await service.store.read("s1")).document.stored()
    await write_raw(service.store, "s1", {**document, **CORRUPTIONS[corruption]})
    planted = await read_raw(service.store, "s1")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        for route in ROUTES:
            response = await _call(client, route)
            assert response.status_code == 500, (route, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["code"] == "session_corrupt", route
    assert len(model.requests) == 1  # the model never saw the corrupt session
    assert await read_raw(service.store, "s1") == planted  # left exactly as it was


async def test_a_chunk_that_does_not_match_its_listing_is_session_corrupt(make_service, backend):
    service = make_service(backend, compaction_max_messages=4)
    await runtime.install(service)
    for i in range(4):
        await service.run_turn("s1", f"m{i}")
    document = (await service.store.read("s1")).document
    assert document.transcript
    chunk_id = f"~t~0~{document.transcript[0].nonce}"
    await service.store.delete_chunk("s1", chunk_id)
    await service.store.raw.write_chunk("s1", chunk_id, {"owner": "", "session_id": "s1", "junk": 1})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        response = await client.get("/api/sessions/s1/messages")
    assert response.status_code == 500
    assert response.json()["code"] == "session_corrupt"


def test_the_stored_form_reads_back_as_the_same_document():
    session = AgentSession(session_id="s1")
    session.state[HISTORY_SOURCE_ID] = {"messages": [Message(role="user", contents=["hi"])]}
    built = SessionDocument.build("s1", session, previous=None, turns=1, ttl_seconds=60, max_bytes=10**6)
    parsed = SessionDocument.parse(json.loads(json.dumps(built.stored())), "s1")
    assert parsed == built
    assert parsed.write_id
    assert len(parsed.write_id) == 32
    assert [m.text for m in history(parsed.restore())] == ["hi"]


# -- MAF's SessionStore contract, on every backend (as MAF's own TestSessionStore/TestFileSessionStore) ---------


@pytest.fixture(params=BACKENDS)
def store(request, make_service):
    return make_service(request.param).store


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
async def test_a_non_finite_float_is_refused_with_value_error(store, value):
    session = AgentSession(session_id="float")
    session.state["value"] = value
    with pytest.raises(ValueError, match="finite float"):
        await store.set("float", session)
    assert await store.get("float") is None


async def test_a_value_json_cannot_hold_is_refused_with_a_type_error_naming_its_path(store):
    class Unsupported:
        pass

    session = AgentSession(session_id="unsupported")
    session.state["nested"] = [{"value": Unsupported()}]
    with pytest.warns(RuntimeWarning), pytest.raises(TypeError, match=r"state\.nested\[0\]\.value.*Unsupported"):
        await store.set("unsupported", session)
    assert await store.get("unsupported") is None


async def test_a_subclass_of_agent_session_is_refused(store):
    class CustomSession(AgentSession):
        pass

    with pytest.raises(TypeError, match="AgentSession instances only"):
        await store.set("custom", CustomSession(session_id="custom"))


async def test_history_that_is_not_messages_is_a_clear_type_error(store):
    session = AgentSession(session_id="s1")
    session.state[HISTORY_SOURCE_ID] = {"messages": ["not a message"]}
    with pytest.raises(TypeError, match=r"messages\[0\] must be an agent_framework Message"):
        await store.set("s1", session)


async def test_set_replaces_and_get_returns_the_stored_session(store):
    await store.set("session-1", AgentSession(session_id="first"))
    await store.set("session-1", AgentSession(session_id="second"))
    stored = await store.get("session-1")
    assert stored is not None
    assert stored.session_id == "second"


@pytest.mark.parametrize("session_id", ["two words", "tenant/user", "session.id", "café", "x" * 300, "é" * 512])
@pytest.mark.parametrize("backend_name", ["memory", pytest.param("cosmos", marks=pytest.mark.cosmos)])
async def test_memory_and_cosmos_accept_any_non_empty_id(make_service, backend_name, session_id):
    store = make_service(backend_name).store
    await store.set(session_id, AgentSession())
    assert await store.get(session_id) is not None
    await store.delete(session_id)
    assert await store.get(session_id) is None


async def test_only_the_file_store_limits_ids_to_128_characters(make_service):
    file_store = make_service("file").store
    with pytest.raises(ValueError, match="session_id"):
        await file_store.set("x" * 129, AgentSession())
    memory = MemorySnapshotStore()
    await memory.set("x" * 129, AgentSession())
    assert await memory.get("x" * 129) is not None


@pytest.mark.parametrize(
    "session_id",
    ["session.id", "two words", "tenant/user", "café", "telegram:123:456", "CON", "Upper", "x" * 128, "é" * 128],
)
async def test_file_names_are_the_ones_maf_file_session_store_uses(tmp_path, session_id):
    """Sessions stored by earlier versions (which used MAF's naming) keep their files."""
    ours = FileSnapshotStore(tmp_path / "ours")
    maf = FileSessionStore(tmp_path / "maf")
    await ours.set(session_id, AgentSession())
    await maf.set(session_id, AgentSession())
    ours_files = sorted(p.name for p in (tmp_path / "ours").iterdir() if p.suffix == ".json")
    maf_files = sorted(p.name for p in (tmp_path / "maf").iterdir())
    assert ours_files == maf_files == [f"{file_stem(session_id)}.json"]


async def test_a_corrupt_file_is_reported_as_value_error_and_left_in_place(tmp_path):
    store = FileSnapshotStore(tmp_path)
    await store.set("s1", AgentSession())
    path = tmp_path / "s1.json"
    path.write_bytes(b"{not json")
    with pytest.raises(ValueError, match="cannot be read") as raised:
        await store.get("s1")
    assert isinstance(raised.value, SessionCorruptError)
    with pytest.raises(SessionCorruptError):
        await store.set("s1", AgentSession())  # never silently replaced either
    assert path.read_bytes() == b"{not json"


async def test_a_utf16_file_is_corrupt_not_sniffed(tmp_path):
    store = FileSnapshotStore(tmp_path)
    await store.set("s1", AgentSession())
    path = tmp_path / "s1.json"
    path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))
    with pytest.raises(SessionCorruptError):
        await store.get("s1")


async def test_a_symlinked_session_file_is_refused(tmp_path):
    store = FileSnapshotStore(tmp_path / "sessions")
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (tmp_path / "sessions" / "s1.json").symlink_to(outside)
    with pytest.raises(ValueError, match="escaped storage directory"):
        await store.get("s1")


async def test_a_stored_snapshot_always_equals_a_full_serialization_of_the_session(make_service, backend):
    """Turns serialize only the messages they add and reuse the stored dicts of the rest: that must never
    differ from serializing the whole session, through archiving, tool calls and approvals."""
    from testkit.support import CallTool

    model = ScriptedChatClient(
        [
            "r0",
            CallTool("lookup", {"item": "x"}),
            "looked it up",
            CallTool("transfer", {"amount": 3, "to": "ann"}, text="Shall I?"),
            "paid",
        ]
    )
    service = make_service(backend, model, agent_tools="tests.tools_for_tests:TOOLS", compaction_max_messages=6)

    async def same_as_full() -> object:
        record = await service.store.read("s1")
        assert record.document.snapshot == json.loads(json.dumps(record.document.restore().to_dict()))
        return record

    for message in ("first", "look it up"):
        await service.run_turn("s1", message)
        await same_as_full()
    (approval,) = (await service.run_turn("s1", "pay ann")).approvals
    await same_as_full()
    await service.run_turn("s1", None, answers=[(approval["id"], True)])
    await same_as_full()
    for i in range(8):
        await service.run_turn("s1", f"more {i}")
        record = await same_as_full()
    assert record.document.transcript  # archiving happened along the way
