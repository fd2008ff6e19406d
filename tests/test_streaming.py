"""Server-Sent Events through the local host over a real socket, read as they arrive."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from testkit.servers import free_port
from testkit.support import EndsWithout, FailMidStream, ScriptedChatClient

SSE = {"Accept": "text/event-stream"}


@pytest.fixture
async def serve():
    """Start uvicorn with the local host's app (in this event loop) for a service; stop it after."""
    servers: list[tuple[uvicorn.Server, asyncio.Task]] = []

    async def start(service) -> str:
        await runtime.install(service)
        port = free_port()
        config = uvicorn.Config(build_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        servers.append((server, task))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, task in servers:
        server.should_exit = True
        await task


@asynccontextmanager
async def open_stream(base: str, session_id: str, message: str) -> AsyncIterator[httpx.Response]:
    """POST a turn asking for Server-Sent Events, over a real socket; closing it disconnects."""
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", f"{base}/api/sessions/{session_id}/turns", json={"message": message}, headers=SSE) as r,
    ):
        yield r


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, dict]]:
    """Parse an SSE stream into ``(event, data)`` pairs as the lines arrive."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])
        elif line == "" and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


async def test_deltas_arrive_before_the_end_and_done_matches_the_json_api(serve, make_service, backend):
    pause = asyncio.Event()
    model = ScriptedChatClient(["The quick brown fox", "The quick brown fox"], pause=pause)
    service = make_service(backend, model)
    base = await serve(service)

    async with open_stream(base, "s1", "hi") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        stream = events(r)
        first = await anext(stream)
        assert first == ("delta", {"text": "The"})  # while the model is still writing
        assert await service.store.read("s1") is None  # nothing stored before the end
        pause.set()
        rest = [item async for item in stream]
    async with httpx.AsyncClient(timeout=30) as client:
        json_body = (await client.post(f"{base}/api/sessions/s2/turns", json={"message": "hi"})).json()

    *deltas, (kind, done) = [first, *rest]
    assert kind == "done"
    assert {e for e, _ in deltas} == {"delta"}
    assert "".join(d["text"] for _, d in deltas) == done["reply"] == "The quick brown fox"
    assert done == {**json_body, "session_id": "s1"}
    stored = await service.describe("s1")
    assert stored["messages"][-1] == {"role": "assistant", "text": "The quick brown fox"}


async def test_a_failure_mid_stream_ends_with_an_error_event_and_stores_nothing(serve, make_service, backend):
    service = make_service(backend, ScriptedChatClient([FailMidStream("half a reply")]))
    base = await serve(service)
    async with open_stream(base, "s1", "hi") as r:
        received = [item async for item in events(r)]

    assert received[0] == ("delta", {"text": "half"})
    kind, error = received[-1]
    assert kind == "error"
    assert (error["status"], error["code"]) == (502, "model_error")
    assert "done" not in [k for k, _ in received]
    assert await service.store.read("s1") is None


async def test_a_client_that_disconnects_mid_stream_abandons_the_turn(serve, make_service, backend):
    pause = asyncio.Event()
    model = ScriptedChatClient(["never finished reply"], pause=pause)
    service = make_service(backend, model)
    base = await serve(service)
    async with open_stream(base, "s1", "hi") as r:
        assert await anext(events(r)) == ("delta", {"text": "never"})
    # leaving the block closed the connection mid-stream

    await asyncio.wait_for(model.cancelled.wait(), timeout=10)  # the server stopped the model call
    pause.set()
    await asyncio.sleep(0.05)
    assert await service.store.read("s1") is None  # not a partial turn, not a whole one: nothing


async def test_errors_before_the_stream_starts_are_plain_problems(serve, make_service):
    service = make_service("memory")
    base = await serve(service)
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"{base}/api/sessions/a%2Fb/turns", json={"message": "hi"}, headers=SSE)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_lost_race_while_streaming_ends_with_a_conflict_event(serve, make_service, backend):
    gate = asyncio.Event()
    model = ScriptedChatClient(["first", "second"], gate=gate)
    service = make_service(backend, model)
    base = await serve(service)

    async def streamed(message: str) -> list[tuple[str, dict]]:
        async with open_stream(base, "s1", message) as r:
            return [item async for item in events(r)]

    async def release_when_both_waiting():
        await model.wait_for_requests(2)
        gate.set()

    one, two, _ = await asyncio.gather(streamed("a"), streamed("b"), release_when_both_waiting())
    finals = sorted([one[-1][0], two[-1][0]])
    assert finals == ["done", "error"]
    error = next(events_[-1][1] for events_ in (one, two) if events_[-1][0] == "error")
    assert error["code"] == "session_conflict"
    assert (await service.describe("s1"))["turns"] == 1


async def test_a_silent_model_gets_keep_alive_comments_and_the_reply_still_arrives(serve, make_service):
    pause = asyncio.Event()
    model = ScriptedChatClient(["thinking hard indeed"], pause=pause)
    service = make_service("memory", model, sse_keepalive_seconds=1)
    base = await serve(service)
    lines: list[str] = []
    async with asyncio.timeout(20), open_stream(base, "s1", "hi") as r:  # without keep-alives: a timeout, no hang
        async for line in r.aiter_lines():
            lines.append(line)
            if line.startswith(":") and not pause.is_set():
                pause.set()  # the model speaks again only once a keep-alive went out while it was silent
    first_delta = lines.index('data: {"text": "thinking"}')
    ping = next(i for i, line in enumerate(lines) if line.startswith(":"))
    done = lines.index("event: done")
    assert first_delta < ping < done
    assert lines[ping] == ": ping"
    assert (await service.describe("s1"))["turns"] == 1


async def test_a_stream_that_closes_without_a_finish_reason_ends_with_an_error(serve, make_service, backend):
    service = make_service(backend, ScriptedChatClient([EndsWithout("cut off mid sentence")]))
    base = await serve(service)
    async with open_stream(base, "s1", "hi") as r:
        received = [item async for item in events(r)]
    assert received[0] == ("delta", {"text": "cut"})
    assert received[-1][0] == "error"
    assert received[-1][1]["code"] == "model_error"
    assert await service.store.read("s1") is None
