"""Windows kept restored by the instance that wrote them: reused only while the stored messages are exactly
the ones kept, equal to what a restore builds after every kind of turn, and never a way around a check."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from agent_framework import Message

from stateful_agent.errors import SessionCorruptError
from stateful_agent.state.documents import HISTORY_SOURCE_ID, history, stored_messages
from stateful_agent.state.jsontext import encode_json
from stateful_agent.stores.file import file_stem
from testkit.support import CallTool, ScriptedChatClient, read_raw, service_for, write_raw
from tests import tools_for_tests
from tests.conftest import BACKENDS, DURABLE_BACKENDS

TOOLS = "tests.tools_for_tests:TOOLS"
TRANSFER = CallTool("transfer", {"amount": 5, "to": "bob"}, text="I will transfer.")


@pytest.fixture(autouse=True)
def _no_runs_yet():
    tools_for_tests.RUNS.clear()


async def _kept_equals_stored(service, session_id: str = "s1", owner: str = "") -> None:
    """The kept window is exactly what restoring the stored document gives."""
    record = await service.store.read(session_id, owner)
    kept = service.warm.restore(record.document)
    assert [m.to_dict() for m in history(kept)] == stored_messages(record.document)
    assert [m.to_dict() for m in history(kept)] == [m.to_dict() for m in history(record.document.restore())]


async def test_every_kind_of_turn_keeps_exactly_what_a_restore_builds(make_service, backend):
    model = ScriptedChatClient(
        [
            "plain",
            CallTool("lookup", {"item": "x"}),
            "looked up",
            TRANSFER,
            "transferred",
            CallTool("explode", {}),
            "it failed",
            "streamed reply",
        ]
    )
    service = make_service(backend, model, agent_tools=TOOLS, compaction_max_messages=6)
    await service.run_turn("s1", "hello")
    await _kept_equals_stored(service)
    await service.run_turn("s1", "look x up", key="k-1")
    await _kept_equals_stored(service)
    (approval,) = (await service.run_turn("s1", "pay bob")).approvals
    await _kept_equals_stored(service)
    await service.run_turn("s1", None, answers=[(approval["id"], True)])
    await _kept_equals_stored(service)
    await service.run_turn("s1", "explode")
    await _kept_equals_stored(service)
    assert (await service.run_turn("s1", "look x up", key="k-1")).replayed
    prepared = await service.prepare("s1", "stream it")
    async for _ in service.stream_turn(prepared):
        pass
    await _kept_equals_stored(service)

    record = await service.store.read("s1")
    assert record.document.archived_count > 0  # archiving turns were among them
    assert tools_for_tests.RUNS == [(5, "bob")]
    assert service.warm.hits >= 6  # every turn after the first was served from the kept window


async def test_a_warm_turn_stores_what_a_cold_turn_stores(make_service, backend, tmp_path):
    script = ["one", CallTool("lookup", {"item": "y"}), "two", "three", "four"]
    warm = make_service(backend, ScriptedChatClient(script), agent_tools=TOOLS, compaction_max_messages=4)
    cold = make_service(
        backend, ScriptedChatClient(script), agent_tools=TOOLS, compaction_max_messages=4, session_cache_bytes=0
    )
    if backend == "file":  # a store of its own
        cold = service_for(replace(cold.settings, session_dir=tmp_path / "cold"), ScriptedChatClient(script))
    for message in ("a", "b", "c", "d"):
        await warm.run_turn("s1", message)
        await cold.run_turn("s1", message)
        ours, theirs = (await warm.store.read("s1")).document, (await cold.store.read("s1")).document
        assert _without_ids(stored_messages(ours)) == _without_ids(stored_messages(theirs))
        assert ours.archived_count == theirs.archived_count
    assert warm.warm.hits == 3
    assert cold.warm.hits == 0


def _without_ids(value):
    """``value`` without the ids and timestamps MAF makes up per response (``id``, ``message_id``, ...)."""
    if isinstance(value, list):
        return [_without_ids(item) for item in value]
    if isinstance(value, dict):
        made_up = ("id", "message_id", "created_at", "response_id")
        return {k: _without_ids(v) for k, v in value.items() if k not in made_up}
    return value


@pytest.mark.parametrize("backend_name", DURABLE_BACKENDS)
async def test_another_instances_write_is_never_hidden_by_the_kept_window(make_service, backend_name):
    first = make_service(backend_name, ScriptedChatClient(["from first", "first again"]))
    second = make_service(backend_name, ScriptedChatClient(["from second"]))
    second.settings, second.store = first.settings, first.store  # two instances, one store
    await first.run_turn("s1", "hello")
    await second.run_turn("s1", "over there")
    result = await first.run_turn("s1", "back here")
    assert result.turn == 3
    texts = [m.text for m in history((await first.store.read("s1")).document.restore())]
    assert texts == ["hello", "from first", "over there", "from second", "back here", "first again"]
    assert first.warm.hits == 0


async def test_a_message_corrupted_in_place_is_reported_not_reused_and_never_overwritten(make_service, tmp_path):
    """The file keeps its ``_etag``: only comparing the messages themselves notices the change."""
    model = ScriptedChatClient()
    service = make_service("file", model)
    await service.run_turn("s1", "hello")
    path = service.settings.session_dir / f"{file_stem('s1')}.json"
    stored = json.loads(path.read_text("utf-8"))
    stored["snapshot"]["state"][HISTORY_SOURCE_ID]["messages"][0]["contents"] = [{"text": "no type"}]
    path.write_text(json.dumps(stored), "utf-8")
    before = path.read_bytes()

    with pytest.raises(SessionCorruptError):
        await service.run_turn("s1", "again")
    with pytest.raises(SessionCorruptError):
        await service.describe("s1")
    assert path.read_bytes() == before
    assert len(model.requests) == 1


async def test_a_message_edited_in_place_is_read_as_edited(make_service):
    model = ScriptedChatClient()
    service = make_service("file", model)
    await service.run_turn("s1", "hello")
    path = service.settings.session_dir / f"{file_stem('s1')}.json"
    stored = json.loads(path.read_text("utf-8"))
    stored["snapshot"]["state"][HISTORY_SOURCE_ID]["messages"][0]["contents"][0]["text"] = "edited"
    path.write_text(json.dumps(stored), "utf-8")
    await service.run_turn("s1", "again")
    assert model.requests[-1][:2] == [("user", "edited"), ("assistant", "reply 1")]  # what the model was sent
    texts = [m.text for m in history((await service.store.read("s1")).document.restore())]
    assert texts == ["edited", "reply 1", "again", "reply 2"]


@pytest.mark.parametrize("backend_name", BACKENDS)
async def test_a_document_check_still_runs_on_a_warm_turn(make_service, backend_name):
    """The messages are the kept ones, the rest of the document is not: its checks run as on any read."""
    model = ScriptedChatClient()
    service = make_service(backend_name, model)
    await service.run_turn("s1", "hello")
    body, _ = await read_raw(service.store, "s1")
    body.pop("id", None)
    body = {k: v for k, v in body.items() if not k.startswith("_")}
    body["idempotency"] = [{"key": "k", "fingerprint": "f", "turn": 1, "first": 0, "count": 99}]
    await write_raw(service.store, "s1", body)
    with pytest.raises(SessionCorruptError):
        await service.run_turn("s1", "again")
    assert len(model.requests) == 1


async def test_deleting_forgets_and_capacity_bounds_what_is_kept(make_service):
    service = make_service("memory", ScriptedChatClient())
    await service.run_turn("s1", "hello")
    size = len(encode_json((await service.store.read("s1")).document.stored()))
    service.warm.capacity = size * 2 + size // 2  # room for two such sessions, not three
    for session_id in ("s2", "s3"):
        await service.run_turn(session_id, "hello")
    assert service.warm.hits == 0
    await service.run_turn("s1", "again")  # s1 was the least recently used: dropped
    assert service.warm.hits == 0
    await service.run_turn("s3", "again")
    assert service.warm.hits == 1

    await service.delete("s3")
    await service.run_turn("s3", "new")
    assert service.warm.hits == 1
    assert [m.text for m in history((await service.store.read("s3")).document.restore())] == ["new", "reply 6"]


async def test_zero_capacity_keeps_nothing(make_service):
    service = make_service("memory", ScriptedChatClient(), session_cache_bytes=0)
    for _ in range(3):
        await service.run_turn("s1", "hello")
    assert service.warm.hits == 0


def test_a_kept_window_is_used_only_for_the_very_messages_it_was_restored_from():
    from stateful_agent.state.documents import SessionDocument
    from stateful_agent.state.warm import WarmWindows

    def document(texts: list[str]) -> SessionDocument:
        messages = [Message(role="user", contents=[t]).to_dict() for t in texts]
        body = {
            "owner": "",
            "session_id": "s1",
            "kind": "snapshot",
            "schema_version": 1,
            "turns": 1,
            "created_at": "2026-11-25T10:00:00.000Z",
            "updated_at": "2026-11-25T10:00:00.000Z",
            "snapshot": {"type": "session", "session_id": "s1", "state": {HISTORY_SOURCE_ID: {"messages": messages}}},
        }
        return SessionDocument.parse(body, "s1", "")

    warm = WarmWindows(1 << 20)
    kept = document(["a", "b"])
    object.__setattr__(kept, "_size", 100)
    warm.keep(kept, history(kept.restore()), 0)
    assert [m.text for m in history(warm.restore(document(["a", "b"])))] == ["a", "b"]
    assert warm.hits == 1
    assert [m.text for m in history(warm.restore(document(["a", "c"])))] == ["a", "c"]
    assert [m.text for m in history(warm.restore(document(["a"])))] == ["a"]
    assert warm.hits == 1
