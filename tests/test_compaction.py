"""Sessions stay small (MAF compaction bounds the live window) and the transcript keeps everything."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from agent_framework import Content, Message

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from stateful_agent.errors import SessionConflictError
from stateful_agent.platform.settings import Settings
from stateful_agent.sessions import transcript
from stateful_agent.state.documents import history
from stateful_agent.turns.compaction import (
    archivable_prefix,
    build_strategy,
    group_messages,  # MAF's, isolated there
)
from testkit.support import ScriptedChatClient
from tests.conftest import DURABLE_BACKENDS


def _listed(document) -> set[str]:
    """The ids of the chunks a snapshot document lists."""
    return {transcript.chunk_id(seq, ref.nonce) for seq, ref in enumerate(document.transcript)}


async def stored_chunk_ids(store, session_id: str, cosmos: dict | None = None, owner: str = "") -> set[str]:
    """Every transcript chunk the backend holds for a session, listed or not."""
    return await store.chunk_ids(session_id, owner)


async def all_messages(session_id: str, limit: int = 200) -> list[dict]:
    """Page through GET /messages with the cursor until it ends."""
    collected, cursor = [], None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        while True:
            params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
            page = (await client.get(f"/api/sessions/{session_id}/messages", params=params)).json()
            collected += page["messages"]
            cursor = page["next_cursor"]
            if cursor is None:
                return collected


@pytest.mark.parametrize("durable", DURABLE_BACKENDS)
async def test_a_thousand_turns_stay_bounded_and_the_transcript_keeps_all_2000_messages(make_service, durable, request):
    limit = 20
    model = ScriptedChatClient()
    service = make_service(durable, model, compaction_max_messages=limit)
    sizes = []
    for i in range(1000):
        await service.run_turn("long", f"message {i}")
        record = await service.store.read("long")
        live = history(record.document.restore())
        assert len(live) <= limit + 1, f"turn {i + 1}: {len(live)} live messages"
        sizes.append(len(json.dumps(record.document.stored())))

    assert max(len(sent) for sent in model.requests) <= limit  # the model never got more than the window
    assert max(sizes) < 10_000
    # Flat: after the window filled, a turn adds only the chunk list's ~16 bytes per archived chunk.
    assert (sizes[-1] - sizes[99]) / 900 < 5

    await runtime.install(service)
    messages = await all_messages("long")
    assert [m["index"] for m in messages] == list(range(2000))  # no gap, no duplicate
    assert [m["text"] for m in messages[::2]] == [f"message {i}" for i in range(1000)]
    assert [m["text"] for m in messages[1::2]] == [f"reply {i + 1}" for i in range(1000)]

    document = (await service.store.read("long")).document
    counts = [ref.count for ref in document.transcript]
    assert min(counts) >= limit // 2 - 1  # one document per chunk of messages, not per message
    cosmos = request.getfixturevalue("cosmos") if durable == "cosmos" else None
    assert await stored_chunk_ids(service.store, "long", cosmos) == _listed(document)


async def test_get_session_shows_the_live_window_and_messages_the_whole_transcript(make_service, backend):
    service = make_service(backend, compaction_max_messages=6)
    for i in range(10):
        await service.run_turn("s1", f"m{i}")
    await runtime.install(service)
    live = (await service.describe("s1"))["messages"]
    everything = await all_messages("s1", limit=3)
    assert len(live) <= 7
    assert len(everything) == 20
    assert [m["text"] for m in everything[-len(live) :]] == [m["text"] for m in live]


async def test_racing_turns_that_archive_leave_no_duplicates_or_visible_leftovers(make_service, backend, request):
    limit = 6
    service = make_service(backend, compaction_max_messages=limit)
    for i in range(3):  # 6 live messages: the next turn archives
        await service.run_turn("s1", f"m{i}")

    gate = asyncio.Event()
    racer_model = ScriptedChatClient(gate=gate)
    racers = make_service(backend, racer_model, compaction_max_messages=limit)
    racers.store = service.store

    async def release():
        await racer_model.wait_for_requests(5)
        gate.set()

    results = await asyncio.gather(
        *(racers.run_turn("s1", f"race {i}") for i in range(5)), release(), return_exceptions=True
    )
    wins = [r for r in results[:5] if not isinstance(r, BaseException)]
    assert len(wins) == 1
    assert all(isinstance(r, SessionConflictError) for r in results[:5] if r not in wins)

    await runtime.install(service)
    texts = [m["text"] for m in await all_messages("s1")]
    winner = f"race {results.index(wins[0])}"
    assert texts == ["m0", "reply 1", "m1", "reply 2", "m2", "reply 3", winner, wins[0].reply]
    document = (await service.store.read("s1")).document
    cosmos = request.getfixturevalue("cosmos") if backend == "cosmos" else None
    assert await stored_chunk_ids(service.store, "s1", cosmos) == _listed(document)


async def test_delete_removes_the_snapshot_and_every_transcript_chunk(make_service, backend, request):
    service = make_service(backend, compaction_max_messages=4)
    for i in range(8):
        await service.run_turn("s1", f"m{i}")
    stray = {"owner": "", "session_id": "s1", "kind": "transcript"}
    await service.store.raw.write_chunk("s1", "~t~99~leftover", stray)
    cosmos = request.getfixturevalue("cosmos") if backend == "cosmos" else None
    assert len(await stored_chunk_ids(service.store, "s1", cosmos)) > 1

    await service.delete("s1")
    assert await service.store.read("s1") is None
    assert await stored_chunk_ids(service.store, "s1", cosmos) == set()


async def test_without_compaction_nothing_is_archived(make_service):
    service = make_service("memory", compaction_strategy="none")
    for i in range(30):
        await service.run_turn("s1", f"m{i}")
    assert "transcript" not in (await service.store.read("s1")).document
    assert len((await service.describe("s1"))["messages"]) == 60


async def test_the_token_budget_bounds_what_the_model_receives(make_service):
    model = ScriptedChatClient()
    service = make_service("memory", model, compaction_strategy="tokens", compaction_token_budget=400)
    for i in range(40):
        await service.run_turn("s1", f"message number {i} " + "x" * 100)
    estimated = [
        sum(max(1, len(json.dumps(Message(role=r, contents=[t]).to_dict())) // 4) for r, t in sent)
        for sent in model.requests
    ]
    assert max(estimated) <= 400
    assert len((await service.store.read("s1")).document.transcript) >= 2


def _tool_conversation() -> list[Message]:
    return [
        Message(role="user", contents=["u1"]),
        Message(role="assistant", contents=[Content.from_function_call(call_id="c1", name="f", arguments={})]),
        Message(role="tool", contents=[Content.from_function_result(call_id="c1", result="ok")]),
        Message(role="assistant", contents=["a1"]),
        Message(role="user", contents=["u2"]),
        Message(role="assistant", contents=["a2"]),
    ]


@pytest.mark.parametrize("limit", [2, 3, 4, 5, 6])
async def test_a_tool_call_is_never_archived_without_its_result(limit):
    history = _tool_conversation()
    strategy = build_strategy(Settings(compaction_max_messages=limit))
    cut = await archivable_prefix(history, Message(role="user", contents=["u3"]), strategy, max_messages=limit)
    boundaries = {0, len(history)} | {span["start_index"] for span in group_messages(_tool_conversation())}
    assert cut in boundaries
    assert cut != 2  # between the call and its result
    assert len(history) - cut + 1 <= limit  # and the prompt fits the window


@pytest.mark.parametrize("strategy_name", ["messages", "tokens"])
async def test_compaction_never_changes_the_stored_messages(strategy_name):
    """The messages are shared (a warm instance reuses them): compaction works on copies only."""
    history = _tool_conversation()
    history[0].additional_properties["mine"] = {"kept": True}
    before = [m.to_dict() for m in history]
    incoming = Message(role="user", contents=["u3" * 100])
    settings = Settings(compaction_strategy=strategy_name, compaction_max_messages=2, compaction_token_budget=100)
    cut = await archivable_prefix(history, incoming, build_strategy(settings), max_messages=2)
    assert cut > 0  # compaction did run and exclude something
    assert [m.to_dict() for m in history] == before
    assert all(m.message_id is None for m in [*history, incoming])
    assert not incoming.additional_properties


async def test_bad_paging_parameters_are_rejected(make_service):
    service = make_service("memory")
    await service.run_turn("s1", "hello")
    await runtime.install(service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        for params, code in (
            ({"cursor": "garbage!"}, "invalid_cursor"),
            ({"limit": "0"}, "invalid_request"),
            ({"limit": "201"}, "invalid_request"),
            ({"limit": "ten"}, "invalid_request"),
        ):
            response = await client.get("/api/sessions/s1/messages", params=params)
            assert response.status_code == 400
            assert response.json()["code"] == code
        missing = await client.get("/api/sessions/nobody/messages")
        assert missing.status_code == 404
