"""Every backend honours MAF's SessionStore contract and our conditional writes."""

from __future__ import annotations

import json

import pytest
from agent_framework import AgentSession, Message
from azure.cosmos.aio import CosmosClient
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from stateful_agent.errors import SessionConflictError, SessionCorruptError, StoreUnavailableError
from stateful_agent.state import documents
from stateful_agent.state.documents import SessionDocument, history
from stateful_agent.stores.cosmos import CosmosSnapshotStore, document_id, session_id_of
from tests.conftest import BACKENDS

ODD_IDS = [
    "with space",
    "a/b",
    "a_b",
    "c:d",
    "e.f",
    'quote"s',
    "it's",
    "ünïcødé-日本-🙂",
    "back\\slash",
    "q?x#y",
    "~tilde",
    "%2F",
    "x" * 128,
]


@pytest.fixture(params=BACKENDS)
def store(request, make_service):
    return make_service(request.param).store


def _session(session_id: str, *texts: str) -> AgentSession:
    session = AgentSession(session_id=session_id)
    session.state[documents.HISTORY_SOURCE_ID] = {
        "messages": [Message(role="user" if i % 2 == 0 else "assistant", contents=[t]) for i, t in enumerate(texts)]
    }
    return session


def _document(session_id: str, turns: int, *texts: str) -> SessionDocument:
    return SessionDocument.build(
        session_id, _session(session_id, *texts), previous=None, turns=turns, ttl_seconds=None, max_bytes=10**6
    )


async def test_get_of_missing_id_returns_none(store):
    assert await store.get("never-stored") is None
    assert await store.read("never-stored") is None


async def test_set_stores_an_independent_snapshot_and_get_returns_a_copy(store):
    session = _session("s1", "hello", "hi there")
    session.state["custom"] = {"n": 1}
    await store.set("s1", session)
    session.state["custom"]["n"] = 2  # mutating the original after set must not leak into the store

    first = await store.get("s1")
    assert first is not None
    assert first.session_id == "s1"
    assert first.state["custom"] == {"n": 1}
    assert [m.text for m in history(first)] == ["hello", "hi there"]
    first.state["custom"]["n"] = 3  # mutating a read copy must not leak either
    second = await store.get("s1")
    assert second is not None
    assert second.state["custom"] == {"n": 1}


async def test_set_replaces_an_existing_snapshot(store):
    await store.set("s1", _session("s1", "one"))
    await store.set("s1", _session("s1", "one", "two", "three"))
    restored = await store.get("s1")
    assert restored is not None
    assert [m.text for m in history(restored)] == ["one", "two", "three"]


async def test_delete_forgets_and_tolerates_missing(store):
    await store.set("s1", _session("s1", "one"))
    await store.delete("s1")
    assert await store.get("s1") is None
    await store.delete("s1")  # deleting again is not an error


@pytest.mark.parametrize("session_id", ODD_IDS)
async def test_any_opaque_non_empty_id_works(store, session_id):
    await store.set(session_id, _session(session_id, f"for {session_id}"))
    restored = await store.get(session_id)
    assert restored is not None
    assert [m.text for m in history(restored)] == [f"for {session_id}"]
    await store.delete(session_id)
    assert await store.get(session_id) is None


async def test_similar_ids_do_not_collide(store):
    for session_id in ("a/b", "a_b", "a%2Fb", "~YS9i"):
        await store.set(session_id, _session(session_id, session_id))
    for session_id in ("a/b", "a_b", "a%2Fb", "~YS9i"):
        restored = await store.get(session_id)
        assert restored is not None
        assert history(restored)[0].text == session_id


@pytest.mark.parametrize("operation", ["get", "set", "delete"])
async def test_empty_id_raises_value_error(store, operation):
    args = ("", AgentSession(session_id="x")) if operation == "set" else ("",)
    with pytest.raises(ValueError, match="non-empty"):
        await getattr(store, operation)(*args)


async def test_create_refuses_an_existing_session(store):
    await store.create("s1", _document("s1", 1, "first"))
    with pytest.raises(SessionConflictError):
        await store.create("s1", _document("s1", 1, "second"))
    record = await store.read("s1")
    assert record is not None
    assert record.document.snapshot["state"] == _document("s1", 1, "first").snapshot["state"]


async def test_replace_is_conditional_on_the_etag(store):
    await store.create("s1", _document("s1", 1, "v1"))
    read_before = await store.read("s1")
    assert read_before is not None
    winner = _document("s1", 2, "v1", "winner")
    new_etag = await store.replace("s1", winner, read_before.etag)
    assert new_etag
    assert new_etag != read_before.etag

    with pytest.raises(SessionConflictError):
        await store.replace("s1", _document("s1", 2, "v1", "loser"), read_before.etag)
    current = await store.read("s1")
    assert current is not None
    assert current.etag == new_etag
    assert current.document == winner  # exactly the winner's document


async def test_replace_of_a_deleted_session_conflicts(store):
    await store.create("s1", _document("s1", 1, "v1"))
    record = await store.read("s1")
    await store.remove("s1")
    with pytest.raises(SessionConflictError):
        await store.replace("s1", _document("s1", 2, "v2"), record.etag)
    assert await store.read("s1") is None


def test_cosmos_ids_are_encoded_reversibly_without_forbidden_characters():
    for session_id in ODD_IDS:
        item_id = document_id(session_id)
        assert not set(item_id) & set("/\\?#")
        assert session_id_of(item_id) == session_id
    assert document_id("plain-id_1.2:3") == "plain-id_1.2:3"
    assert document_id("~YS9i") != "~YS9i"  # a literal id can never look like an encoded one


@pytest.mark.cosmos
async def test_cosmos_missing_session_is_a_404_from_the_server(make_service, cosmos):
    """Proves the installed server is patched: a missing item is 404, not 500."""
    store = make_service("cosmos").store
    assert await store.read("no-such-session") is None  # also creates the container
    async with CosmosClient(cosmos["endpoint"], credential=cosmos["key"], enable_endpoint_discovery=False) as client:
        container = client.get_database_client(cosmos["database"]).get_container_client(store.container_name)
        with pytest.raises(CosmosResourceNotFoundError) as raised:
            await container.read_item("no-such-session", partition_key=["", "no-such-session"])
    assert raised.value.status_code == 404


@pytest.mark.cosmos
async def test_cosmos_document_layout(make_service, cosmos):
    store = make_service("cosmos", session_ttl_seconds=3600).store
    session = _session("a/b", "hello")
    await store.set("a/b", session)
    async with CosmosClient(cosmos["endpoint"], credential=cosmos["key"], enable_endpoint_discovery=False) as client:
        container = client.get_database_client(cosmos["database"]).get_container_client(store.container_name)
        item = await container.read_item(document_id("a/b"), partition_key=["", "a/b"])
    assert item["id"] == document_id("a/b")
    assert (item["owner"], item["session_id"]) == ("", "a/b")
    assert item["schema_version"] == documents.SCHEMA_VERSION
    assert item["ttl"] == 3600
    assert item["turns"] == 1
    assert item["snapshot"] == json.loads(json.dumps(session.to_dict()))  # MAF's to_dict output, unmodified


async def test_unparseable_file_snapshot_is_reported_corrupt_and_kept(make_service):
    store = make_service("file").store
    await store.set("s1", _session("s1", "hello"))
    path = store.path("s1")
    path.write_text("{not json")
    with pytest.raises(SessionCorruptError):
        await store.get("s1")
    assert path.read_text() == "{not json"


async def test_cosmos_unreachable_is_store_unavailable_with_retry_after():
    store = CosmosSnapshotStore(endpoint="https://127.0.0.1:9", database="agents", container="sessions", key="a2V5")
    try:
        with pytest.raises(StoreUnavailableError) as raised:
            await store.read("s1")
    finally:
        await store.close()
    assert raised.value.status == 503
    assert int(raised.value.headers["Retry-After"]) >= 1
