"""Idempotent retries: one model call and one stored turn per Idempotency-Key."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from testkit.support import ScriptedChatClient, service_for
from tests.conftest import DURABLE_BACKENDS

TURN = "/api/sessions/s1/turns"

#: What a turn without tools or reported usage adds to its body.
NO_EXTRAS = {"approvals": [], "usage": None}


@pytest.fixture
async def client():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as http:
        yield http


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def test_a_repeat_returns_the_stored_response_without_calling_the_model(client, make_service, backend):
    model = ScriptedChatClient(["the one reply"])
    service = make_service(backend, model)
    await runtime.install(service)

    first = await client.post(TURN, json={"message": "hello"}, headers=keyed("k-1"))
    stored = await service.store.read("s1")
    second = await client.post(TURN, json={"message": "hello"}, headers=keyed("k-1"))

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() == {"session_id": "s1", "turn": 1, "reply": "the one reply", **NO_EXTRAS}
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert len(model.requests) == 1
    assert await service.store.read("s1") == stored  # nothing written by the repeat


async def test_a_streamed_repeat_is_one_done_event(client, make_service):
    model = ScriptedChatClient(["streamed reply"])
    await runtime.install(make_service("memory", model))
    headers = {**keyed("k-1"), "Accept": "text/event-stream"}
    first = await client.post(TURN, json={"message": "hello"}, headers=headers)
    second = await client.post(TURN, json={"message": "hello"}, headers=headers)

    body = '{"session_id": "s1", "turn": 1, "reply": "streamed reply", "approvals": [], "usage": null}'
    done = f"event: done\ndata: {body}\n\n"
    assert first.text.endswith(done)
    assert second.text == done
    assert second.headers["idempotent-replayed"] == "true"
    assert len(model.requests) == 1


async def test_the_same_key_with_another_body_is_a_422(client, make_service, backend):
    model = ScriptedChatClient()
    service = make_service(backend, model)
    await runtime.install(service)
    await client.post(TURN, json={"message": "hello"}, headers=keyed("k-1"))
    stored = await service.store.read("s1")

    response = await client.post(TURN, json={"message": "something else"}, headers=keyed("k-1"))
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert len(model.requests) == 1
    assert await service.store.read("s1") == stored


async def test_concurrent_requests_with_one_key_store_one_turn(make_service, backend):
    gate = asyncio.Event()
    model = ScriptedChatClient(["only once", "only once"], gate=gate)
    service = make_service(backend, model)

    async def release():
        await model.wait_for_requests(2)
        gate.set()

    results = await asyncio.gather(
        service.run_turn("s1", "hello", "k-1"),
        service.run_turn("s1", "hello", "k-1"),
        release(),
        return_exceptions=True,
    )
    first, second = results[:2]
    described = await service.describe("s1")
    assert described["turns"] == 1
    assert [m["text"] for m in described["messages"]] == ["hello", "only once"]
    # the loser of the race answers with the winner's result instead of a conflict
    assert first.as_json() == second.as_json() == {"session_id": "s1", "turn": 1, "reply": "only once", **NO_EXTRAS}
    assert sorted([first.replayed, second.replayed]) == [False, True]


@pytest.mark.parametrize("durable", DURABLE_BACKENDS)
async def test_the_key_survives_a_restart_of_the_process(make_service, durable):
    service = make_service(durable, ScriptedChatClient(["before restart"]))
    await service.run_turn("s1", "hello", "k-1")

    fresh_model = ScriptedChatClient(["must not be called"])
    restarted = service_for(service.settings, fresh_model)  # a new store client and agent, same data
    try:
        result = await restarted.run_turn("s1", "hello", "k-1")
    finally:
        await restarted.store.close()
    assert (result.reply, result.turn, result.replayed) == ("before restart", 1, True)
    assert fresh_model.requests == []


async def test_only_the_most_recent_keys_are_remembered(make_service):
    model = ScriptedChatClient()
    service = make_service("memory", model, idempotency_keys=2)
    for i in range(3):
        await service.run_turn("s1", f"m{i}", f"k-{i}")
    again = await service.run_turn("s1", "m0", "k-0")  # forgotten: runs as a new turn
    assert (again.turn, again.replayed) == (4, False)
    kept = await service.run_turn("s1", "m2", "k-2")
    assert (kept.turn, kept.replayed) == (3, True)
    assert len((await service.store.read("s1")).document.idempotency) == 2


async def test_a_replay_is_rebuilt_from_the_transcript_after_archiving(make_service, backend):
    service = make_service(backend, ScriptedChatClient(["the keyed reply"]), compaction_max_messages=4)
    first = await service.run_turn("s1", "keyed", "k-1")
    for i in range(6):
        await service.run_turn("s1", f"filler {i}")
    document = (await service.store.read("s1")).document
    assert document.transcript, "the keyed turn must have been archived"
    replay = await service.run_turn("s1", "keyed", "k-1")
    assert (replay.reply, replay.turn, replay.replayed) == (first.reply, 1, True)


@pytest.mark.parametrize("key", ["", "has space", "x" * 129, "naïve", "tab\there"])
async def test_invalid_keys_are_rejected(client, make_service, key):
    service = make_service("memory")
    await runtime.install(service)
    response = await client.post(TURN, json={"message": "hi"}, headers={"Idempotency-Key": key.encode()})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_idempotency_key"
    assert await service.store.read("s1") is None
