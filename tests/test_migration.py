"""Upgrading from the previous version: its container is refused, and ``python -m stateful_agent migrate``
moves its sessions into the current layout, where they continue.

The previous version's documents are the ones its own code wrote (``tests/previous_version/capture.py``
ran it and captured ``sessions.json``); they are loaded into a container of its layout (partitioned by
``/session_id``) on the local Cosmos DB server.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from stateful_agent.platform.models import EchoChatClient
from stateful_agent.stores import create_store
from stateful_agent.stores.cosmos import PARTITION_KEY_PATHS
from stateful_agent.stores.cosmos_migrate import migrate
from testkit.support import run_module, service_for, settings_environment, settings_for

pytestmark = pytest.mark.cosmos

CAPTURED = json.loads((Path(__file__).parent / "previous_version" / "sessions.json").read_text())
SESSIONS = {"ada", "ses/1 ä", "short"}


def captured(item_id: str) -> dict[str, Any]:
    return copy.deepcopy(next(item for item in CAPTURED["items"] if item["id"] == item_id))


@pytest.fixture
async def cosmos_client(cosmos):
    async with CosmosClient(cosmos["endpoint"], credential=cosmos["key"], enable_endpoint_discovery=False) as client:
        yield client


@pytest.fixture
async def old_container(cosmos, cosmos_client):
    """A container of the previous layout holding what the previous version stored; yields its name."""
    database = await cosmos_client.create_database_if_not_exists(cosmos["database"])
    name = f"old-{uuid.uuid4().hex[:8]}"
    container = await database.create_container(name, partition_key=PartitionKey(path="/session_id"))
    for item in CAPTURED["items"]:
        await container.create_item(item)
    return name


async def items_of(cosmos, client, container: str) -> list[dict[str, Any]]:
    proxy = client.get_database_client(cosmos["database"]).get_container_client(container)
    items = [item async for item in proxy.query_items("SELECT * FROM c")]
    return sorted(({k: v for k, v in i.items() if k != "_ts"} for i in items), key=lambda i: (i["session_id"], i["id"]))


@pytest.fixture
def target(cosmos):
    """Settings of the app with a fresh container of the current layout."""
    return settings_for("cosmos", cosmos=cosmos)


def run_migrate(settings, *args: str) -> tuple[int, dict[str, Any], str]:
    """``python -m stateful_agent migrate`` in a new process, configured like the app; its exit status,
    the JSON report and what it wrote to standard error."""
    completed = run_module("stateful_agent", "migrate", *args, env=settings_environment("cosmos", settings))
    report = json.loads(completed.stdout.strip().splitlines()[-1]) if completed.stdout.strip() else {}
    return completed.returncode, report, completed.stderr


async def app(settings, **extra):
    service = service_for(replace(settings, **extra), EchoChatClient())
    await runtime.install(service)
    return service, httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t")


@pytest.fixture(autouse=True)
async def _uninstall():
    yield
    await runtime.install(None)


# -- the container is checked -----------------------------------------------------------------------------


async def test_a_container_of_the_previous_layout_is_refused_everywhere_and_nothing_is_written(
    cosmos, cosmos_client, old_container, target
):
    before = await items_of(cosmos, cosmos_client, old_container)
    _, client = await app(target, cosmos_container=old_container, cosmos_create_container=False)
    async with client:
        responses = [
            await client.post("/api/sessions/ada/turns", json={"message": "hello again"}),
            await client.post("/api/sessions/new-one/turns", json={"message": "a new session"}),
            await client.get("/api/sessions/ada"),
            await client.get("/api/sessions/ada/messages"),
            await client.get("/api/sessions"),
            await client.delete("/api/sessions/ada"),
        ]
        health = await client.get("/api/health")
    for response in responses:
        assert response.status_code == 500, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "configuration_error"
    detail = responses[0].json()["detail"]
    assert f"'{old_container}'" in detail
    assert "['/session_id']" in detail
    assert "[/owner, /session_id]" in detail or str(PARTITION_KEY_PATHS) in detail
    assert f"python -m stateful_agent migrate --from-container {old_container}" in detail
    assert health.status_code == 503
    assert health.json()["code"] == "configuration_error"
    assert "detail" not in health.json()  # anonymous: the code only, the detail is in the log
    assert await items_of(cosmos, cosmos_client, old_container) == before  # nothing written, nothing deleted


async def test_a_container_without_the_listing_index_is_refused(cosmos, cosmos_client, target):
    database = await cosmos_client.create_database_if_not_exists(cosmos["database"])
    name = f"noindex-{uuid.uuid4().hex[:8]}"
    await database.create_container(name, partition_key=PartitionKey(path=PARTITION_KEY_PATHS, kind="MultiHash"))
    _, client = await app(target, cosmos_container=name, cosmos_create_container=False)
    async with client:
        response = await client.post("/api/sessions/s1/turns", json={"message": "hi"})
        health = await client.get("/api/health")
    assert response.status_code == 500
    assert "composite index" in response.json()["detail"]
    assert health.status_code == 503


async def test_a_missing_container_is_a_configuration_error_naming_it(target):
    _, client = await app(target, cosmos_container="no-such-container", cosmos_create_container=False)
    async with client:
        response = await client.get("/api/sessions/s1")
    assert response.status_code == 500
    assert response.json()["code"] == "configuration_error"
    assert "'no-such-container' does not exist" in response.json()["detail"]


async def test_the_layout_is_read_once_per_process(target, monkeypatch):
    from azure.cosmos.aio import ContainerProxy

    reads = []
    original = ContainerProxy.read

    async def counted(self, *args, **kwargs):
        reads.append(self.id)
        return await original(self, *args, **kwargs)

    store = create_store(target)
    async with store:
        await store.ping()  # the container exists, as infra/ deploys it
    monkeypatch.setattr(ContainerProxy, "read", counted)
    _, client = await app(target, cosmos_create_container=False)
    async with client:
        for i in range(3):
            assert (await client.post("/api/sessions/s1/turns", json={"message": f"m{i}"})).status_code == 200
    assert reads == [target.cosmos_container]


# -- migration -------------------------------------------------------------------------------------------


async def test_migrated_sessions_continue_where_they_were(cosmos, cosmos_client, old_container, target):
    source_before = await items_of(cosmos, cosmos_client, old_container)
    status, report, errors = run_migrate(target, "--from-container", old_container)
    assert status == 0, errors
    assert (report["copied"], report["chunks_copied"], report["already_there"], report["skipped"]) == (3, 3, 0, [])
    assert report["target"] == target.cosmos_container
    assert "copied 3 session(s)" in errors

    service, client = await app(target)
    async with client:
        listed = (await client.get("/api/sessions")).json()["sessions"]
        ada = (await client.get("/api/sessions/ada")).json()
        page = (await client.get("/api/sessions/ada/messages", params={"limit": 200})).json()
        replay = await client.post(
            "/api/sessions/ada/turns", json={"message": "Message 5 from Ada"}, headers={"Idempotency-Key": "k-ada-5"}
        )
        turn = (await client.post("/api/sessions/ada/turns", json={"message": "Do you remember me?"})).json()
        after = (await client.get("/api/sessions/ada/messages", params={"limit": 200})).json()
    assert {row["session_id"] for row in listed} == SESSIONS
    assert {row["title"] for row in listed} >= {"Just one turn"}
    assert ada["turns"] == 7
    # the whole transcript, archived chunks and live window, in order
    users = [m["text"] for m in page["messages"] if m["role"] == "user"]
    assert users == [f"Message {i} from Ada" for i in range(7)]
    assert page["total"] == 14
    assert [m["index"] for m in page["messages"]] == list(range(14))
    # an id the HTTP API does not take (stored through MAF's SessionStore contract) keeps working there
    encoded = await service.store.get("ses/1 ä")
    assert [m.text for m in encoded.state["in_memory"]["messages"] if m.role == "user"] == [
        "An id that needs encoding",
        "And a second turn",
    ]
    assert replay.status_code == 200
    assert replay.headers.get("idempotent-replayed") == "true"
    assert replay.json()["turn"] == 6
    assert turn["turn"] == 8
    assert "earlier message(s)" in turn["reply"]
    assert "I see 0 earlier" not in turn["reply"]  # the model saw the migrated window
    assert after["total"] == 16
    assert await items_of(cosmos, cosmos_client, old_container) == source_before  # the source is untouched


async def test_a_second_run_copies_nothing_and_keeps_what_continued(cosmos, cosmos_client, old_container, target):
    assert run_migrate(target, "--from-container", old_container)[0] == 0
    service, client = await app(target)
    async with client:
        await client.post("/api/sessions/short/turns", json={"message": "continued after the upgrade"})
    status, report, _ = run_migrate(target, "--from-container", old_container)
    assert status == 0
    assert (report["copied"], report["already_there"], report["skipped"]) == (0, 3, [])
    assert (await service.store.read("short")).document.turns == 2  # the continued session was not overwritten


async def test_a_run_stopped_halfway_resumes_and_copies_each_session_once(cosmos, cosmos_client, old_container, target):
    store = create_store(target)
    created = []
    original = store.create

    async def dies_on_the_second(session_id, document):
        if created:
            raise KeyboardInterrupt  # the process is killed after the chunks, before the snapshot
        created.append(session_id)
        return await original(session_id, document)

    store.create = dies_on_the_second
    with pytest.raises(KeyboardInterrupt):
        await migrate(store, old_container)
    await store.close()

    status, report, errors = run_migrate(target, "--from-container", old_container)
    assert status == 0, errors
    assert (report["copied"], report["already_there"]) == (2, 1)
    items = await items_of(cosmos, cosmos_client, target.cosmos_container)
    snapshots = [i["session_id"] for i in items if i["kind"] == "snapshot"]
    chunks = [i["id"] for i in items if i["kind"] == "transcript"]
    assert sorted(snapshots) == sorted(SESSIONS)
    assert len(chunks) == len(set(chunks)) == 3


async def test_a_newer_version_in_the_source_replaces_an_older_copy(cosmos, cosmos_client, old_container, target):
    assert run_migrate(target, "--from-container", old_container)[0] == 0
    newer = captured("short")  # the previous version ran on after the first migration
    newer.update(turns=2, updated_at="2099-01-01T00:00:00.000Z", write_id=uuid.uuid4().hex)
    database = cosmos_client.get_database_client(cosmos["database"])
    await database.get_container_client(old_container).upsert_item(newer)
    status, report, _ = run_migrate(target, "--from-container", old_container)
    assert status == 0
    assert (report["copied"], report["already_there"]) == (1, 2)
    store = create_store(target)
    async with store:
        assert (await store.read("short")).document.write_id == newer["write_id"]


async def test_a_dry_run_reports_and_writes_nothing(cosmos, cosmos_client, old_container, target):
    status, report, _ = run_migrate(target, "--from-container", old_container, "--dry-run")
    assert status == 0
    assert (report["dry_run"], report["copied"], report["chunks_copied"]) == (True, 3, 3)
    assert await items_of(cosmos, cosmos_client, target.cosmos_container) == []


async def test_documents_that_do_not_validate_are_reported_and_never_copied(
    cosmos, cosmos_client, old_container, target
):
    old = cosmos_client.get_database_client(cosmos["database"]).get_container_client(old_container)
    broken = captured("short")
    broken.update(id="broken", session_id="broken", turns=-1)
    restless = captured("short")
    restless.update(id="restless", session_id="restless", snapshot={"type": "session", "session_id": "x", "state": 7})
    orphan = captured("ada")  # lists chunks that its partition does not hold
    orphan.update(id="orphan", session_id="orphan")
    leftover = captured("~t~0~90d828c4")
    leftover.update(id="~t~0~deadbeef")
    foreign = {"id": "m1", "session_id": "maf", "role": "user", "content": "a MAF history message"}
    for item in (broken, restless, orphan, leftover, foreign):
        await old.create_item(item)

    status, report, errors = run_migrate(target, "--from-container", old_container)
    assert status == 1
    assert report["copied"] == 3
    reasons = {item["id"]: item["reason"] for item in report["skipped"]}
    assert set(reasons) == {"broken", "restless", "orphan", "~t~0~deadbeef", "m1"}
    assert "does not validate" in reasons["broken"]
    assert "does not validate" in reasons["restless"]
    assert "missing" in reasons["orphan"]
    assert "no snapshot lists" in reasons["~t~0~deadbeef"]
    assert "not a session document" in reasons["m1"]
    assert "skipped 'broken'" in errors
    copied = {i["session_id"] for i in await items_of(cosmos, cosmos_client, target.cosmos_container)}
    assert copied == SESSIONS  # nothing of a skipped session, not even its chunks


async def test_sessions_can_be_given_to_one_user(old_container, target):
    status, report, _ = run_migrate(target, "--from-container", old_container, "--owner", "header/alice")
    assert report["owner"] == "header/alice"
    assert status == 0
    _, client = await app(target, auth_mode="header")
    async with client:
        alice = (await client.get("/api/sessions", headers={"X-User-Id": "alice"})).json()["sessions"]
        bob = (await client.get("/api/sessions", headers={"X-User-Id": "bob"})).json()["sessions"]
        turn = await client.post(
            "/api/sessions/ada/turns", json={"message": "still me"}, headers={"X-User-Id": "alice"}
        )
    assert {row["session_id"] for row in alice} == SESSIONS
    assert bob == []
    assert turn.json()["turn"] == 8


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--from-container", "no-such-container"], "No container 'no-such-container'"),
        (["--from-container", "SAME"], "names the target container itself"),
        (["--from-container", "NEW"], "not the previous version's"),
        (["--from-container", "x", "--owner", "alice"], "--owner must be"),
    ],
)
async def test_a_migration_that_cannot_run_says_why(cosmos, cosmos_client, target, args, fragment):
    store = create_store(target)
    async with store:
        await store.ping()  # create the target container
    database = await cosmos_client.create_database_if_not_exists(cosmos["database"])
    other = f"new-{uuid.uuid4().hex[:8]}"
    await database.create_container(other, partition_key=PartitionKey(path=PARTITION_KEY_PATHS, kind="MultiHash"))
    args = [{"SAME": target.cosmos_container, "NEW": other}.get(a, a) for a in args]
    status, report, errors = run_migrate(target, *args)
    assert status == 2
    assert fragment in errors
    assert report == {}
