"""The turn pipeline on every backend: history, failures, corruption, races."""

from __future__ import annotations

import asyncio

import pytest
from agent_framework import Agent, InMemoryHistoryProvider

from stateful_agent.errors import (
    ConfigurationError,
    ModelError,
    SessionConflictError,
    SessionCorruptError,
    SessionTooLargeError,
)
from stateful_agent.state.documents import history
from stateful_agent.turns.service import TurnService
from testkit.support import ModelDown, ScriptedChatClient, read_raw, write_raw


async def test_each_turn_sees_every_earlier_turn(make_service, backend):
    model = ScriptedChatClient(["Hi Ada.", "You are Ada."])
    service = make_service(backend, model)

    first = await service.run_turn("s1", "My name is Ada.")
    second = await service.run_turn("s1", "What is my name?")

    assert (first.turn, first.reply) == (1, "Hi Ada.")
    assert (second.turn, second.reply) == (2, "You are Ada.")
    assert model.requests[1] == [
        ("user", "My name is Ada."),
        ("assistant", "Hi Ada."),
        ("user", "What is my name?"),
    ]
    described = await service.describe("s1")
    assert described["turns"] == 2
    assert described["messages"] == [
        {"role": "user", "text": "My name is Ada."},
        {"role": "assistant", "text": "Hi Ada."},
        {"role": "user", "text": "What is my name?"},
        {"role": "assistant", "text": "You are Ada."},
    ]
    assert described["created_at"] <= described["updated_at"]


async def test_model_failure_on_a_new_session_stores_nothing(make_service, backend):
    service = make_service(backend, ScriptedChatClient([ModelDown("503 from model")]))
    with pytest.raises(ModelError):
        await service.run_turn("s1", "hello")
    assert await service.store.read("s1") is None


async def test_model_failure_leaves_the_stored_session_untouched(make_service, backend):
    service = make_service(backend, ScriptedChatClient(["ok", ModelDown("timeout")]))
    await service.run_turn("s1", "first")
    before = await service.store.read("s1")

    with pytest.raises(ModelError):
        await service.run_turn("s1", "second")

    after = await service.store.read("s1")
    assert after == before  # same document, same etag: no half turn
    assert (await service.run_turn("s1", "third")).turn == 2


async def test_a_cancelled_turn_stores_nothing(make_service, backend):
    gate = asyncio.Event()  # never opened: the model call hangs until cancelled
    model = ScriptedChatClient(gate=gate)
    service = make_service(backend, model)
    task = asyncio.create_task(service.run_turn("s1", "hello"))
    await model.wait_for_requests(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await service.store.read("s1") is None


async def test_corrupt_snapshot_fails_loudly_and_is_never_overwritten(make_service, backend, caplog):
    model = ScriptedChatClient()
    service = make_service(backend, model)
    await service.run_turn("s1", "hello")
    record = await service.store.read("s1")
    unrestorable = {"type": "session", "session_id": "s1", "state": {"in_memory": 42}}
    broken = {**record.document.stored(), "snapshot": unrestorable}
    await write_raw(service.store, "s1", broken)
    stored = await read_raw(service.store, "s1")

    with pytest.raises(SessionCorruptError) as raised:
        await service.run_turn("s1", "again")
    with pytest.raises(SessionCorruptError):
        await service.describe("s1")

    assert len(model.requests) == 1  # the model was not called with a half-restored session
    assert await read_raw(service.store, "s1") == stored
    assert "'s1'" in raised.value.internal  # what the log line says


async def test_snapshot_above_the_limit_is_refused_and_nothing_written(make_service, backend):
    service = make_service(backend, ScriptedChatClient(["x" * 4000]), max_snapshot_bytes=4096)
    with pytest.raises(SessionTooLargeError) as raised:
        await service.run_turn("s1", "hello")
    assert raised.value.status == 413
    assert await service.store.read("s1") is None


async def test_a_turn_the_history_provider_did_not_record_is_not_stored(make_service, backend):
    service = make_service(backend)
    broken = TurnService(
        service.settings,
        service.store,
        lambda: Agent(client=ScriptedChatClient(), context_providers=[InMemoryHistoryProvider(store_outputs=False)]),
    )
    with pytest.raises(ConfigurationError, match="history provider"):
        await broken.run_turn("s1", "hello")
    assert await service.store.read("s1") is None


async def test_racing_turns_one_wins_the_rest_conflict(make_service, backend):
    gate = asyncio.Event()
    model = ScriptedChatClient(gate=gate)
    service = make_service(backend, model)
    tasks = [asyncio.create_task(service.run_turn("s1", f"m{i}")) for i in range(10)]
    await model.wait_for_requests(10)  # all ten have read the same (missing) snapshot
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    wins = [r for r in results if not isinstance(r, BaseException)]
    conflicts = [r for r in results if isinstance(r, SessionConflictError)]
    assert len(wins) == 1
    assert len(conflicts) == 9
    described = await service.describe("s1")
    assert described["turns"] == 1
    assert [m["text"] for m in described["messages"]] == [f"m{results.index(wins[0])}", wins[0].reply]


async def test_interleaved_turns_store_exactly_the_successful_ones_in_order(make_service, backend):
    service = make_service(backend)

    async def turn(i: int):
        await asyncio.sleep(0.002 * (i % 3))
        try:
            return i, await service.run_turn("s1", f"m{i}")
        except SessionConflictError:
            return i, None

    outcomes = await asyncio.gather(*(turn(i) for i in range(10)))
    succeeded = sorted((r.turn, f"m{i}", r.reply) for i, r in outcomes if r is not None)
    assert succeeded, "at least one turn must win"
    assert [t for t, _, _ in succeeded] == list(range(1, len(succeeded) + 1))

    described = await service.describe("s1")
    expected = [text for _, message, reply in succeeded for text in (message, reply)]
    assert [m["text"] for m in described["messages"]] == expected
    assert described["turns"] == len(succeeded)
    live = history((await service.store.read("s1")).document.restore())
    assert len(live) == 2 * len(succeeded)


@pytest.mark.cosmos
async def test_store_client_and_agent_are_built_once_and_reused(make_service):
    service = make_service("cosmos")
    await service.run_turn("s1", "one")
    client, agent = service.store.client, service.agent
    await service.run_turn("s1", "two")
    await service.describe("s1")
    assert client is not None
    assert service.store.client is client
    assert service.agent is agent


async def test_an_identical_repeated_exchange_is_stored_as_a_new_turn(make_service, backend):
    """MAF's stock provider would drop it as a replay, and the turn would be lost."""
    service = make_service(backend, ScriptedChatClient(["ok", "ok", "ok"]))
    for expected in (1, 2, 3):
        assert (await service.run_turn("s1", "yes")).turn == expected
    assert [m["text"] for m in (await service.describe("s1"))["messages"]] == ["yes", "ok"] * 3
