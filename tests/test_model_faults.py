"""Model faults: incomplete replies, content filters, hung or refusing endpoints; nothing stored, one log line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from agent_framework.exceptions import AgentContentFilterException, ChatClientContentFilterException

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from stateful_agent.errors import ContentFilteredError, ModelError
from stateful_agent.platform.settings import load_settings
from stateful_agent.runtime import build_service
from stateful_agent.turns.service import TurnService
from testkit.support import EndsWithout, ModelDown, ScriptedChatClient, sse_events

TURN = "/api/sessions/s1/turns"


async def _post(service: TurnService, *, stream: bool) -> httpx.Response:
    await runtime.install(service)
    headers = {"Accept": "text/event-stream"} if stream else {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        return await client.post(TURN, json={"message": "tell me"}, headers=headers)


@pytest.mark.parametrize("existing", [False, True], ids=["new-session", "existing-session"])
async def test_a_reply_without_a_finish_reason_is_a_model_error_and_stores_nothing(make_service, backend, existing):
    model = ScriptedChatClient(["first", EndsWithout("half an ans"), EndsWithout("half an ans")])
    service = make_service(backend, model)
    if existing:
        await service.run_turn("s1", "hello")
    else:
        model.script.pop(0)
    before = await service.store.read("s1")

    response = await _post(service, stream=False)
    assert response.status_code == 502
    assert response.json()["code"] == "model_error"

    streamed = sse_events((await _post(service, stream=True)).text)
    assert streamed[0] == ("delta", {"text": "half"})
    assert streamed[-1][0] == "error"
    assert streamed[-1][1]["code"] == "model_error"
    assert await service.store.read("s1") == before


@pytest.mark.parametrize(
    "step",
    [
        EndsWithout("I cannot", "content_filter"),
        ChatClientContentFilterException("filtered prompt"),
        AgentContentFilterException("filtered by the agent"),
    ],
    ids=["finish-reason", "chat-client-exception", "agent-exception"],
)
async def test_a_content_filter_refusal_is_a_422_not_a_retryable_502(make_service, step):
    service = make_service("memory", ScriptedChatClient([step, step]))
    response = await _post(service, stream=False)
    assert response.status_code == 422
    assert response.json()["code"] == "content_filtered"
    streamed = sse_events((await _post(service, stream=True)).text)
    assert streamed[-1][0] == "error"
    assert streamed[-1][1]["code"] == "content_filtered"
    assert await service.store.read("s1") is None


async def test_a_reply_cut_by_the_token_limit_is_complete_and_stored(make_service):
    service = make_service("memory", ScriptedChatClient([EndsWithout("a long answer that stops", "length")]))
    result = await service.run_turn("s1", "hello")
    assert result.reply == "a long answer that stops"
    assert (await service.describe("s1"))["turns"] == 1


# -- a real OpenAI-compatible endpoint on loopback that misbehaves ---------------------------------------------


@contextlib.asynccontextmanager
async def misbehaving_endpoint(mode: str) -> AsyncIterator[dict]:
    """An HTTP server on loopback that hangs (``hang``) or refuses with 401 (``401``); counts requests."""
    seen = {"requests": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            seen["requests"] += 1
            if mode == "hang":
                await asyncio.sleep(3600)
            body = json.dumps({"error": {"message": "Access denied: invalid key", "type": "invalid_request_error"}})
            writer.write(
                f"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n{body}".encode()
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield {"url": f"http://127.0.0.1:{port}/v1", "seen": seen}
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)


def _against(url: str, **settings: str) -> TurnService:
    """The app's real service (memory store) with MAF's OpenAI client pointed at ``url``."""
    environ = {"OPENAI_BASE_URL": url, "OPENAI_MODEL": "test-model", "MAF_SESSION_BACKEND": "memory", **settings}
    return build_service(load_settings(environ))


async def test_a_hung_model_fails_after_model_timeout_seconds_with_retries(caplog):
    async with misbehaving_endpoint("hang") as endpoint:
        service = _against(endpoint["url"], MODEL_TIMEOUT_SECONDS="1", MODEL_MAX_RETRIES="1")
        started = time.monotonic()
        with pytest.raises(ModelError) as raised:
            await service.run_turn("s1", "hello")
        elapsed = time.monotonic() - started
    assert endpoint["seen"]["requests"] == 2  # the first attempt and one retry, each cut off after 1 s
    assert elapsed < 30  # not the SDK's 600 s per attempt
    assert await service.store.read("s1") is None
    assert raised.value.unexpected is None  # an expected failure: one log line, no traceback
    assert endpoint["url"] in raised.value.internal  # what the log line says, never the client
    assert "MODEL_TIMEOUT_SECONDS" in raised.value.internal
    assert endpoint["url"] not in raised.value.detail


async def test_a_model_that_refuses_authentication_is_logged_as_such(caplog):
    async with misbehaving_endpoint("401") as endpoint:
        service = _against(endpoint["url"], MODEL_MAX_RETRIES="0")
        with pytest.raises(ModelError) as raised:
            await service.run_turn("s1", "hello")
    message = raised.value.internal
    assert "Authentication to the model failed" in message
    assert "status 401" in message
    assert endpoint["url"] in message
    assert raised.value.unexpected is None


async def test_an_unexpected_model_failure_is_logged_with_its_traceback(make_service, caplog):
    service = make_service("memory", ScriptedChatClient([ModelDown("something new")]))
    with pytest.raises(ModelError) as raised:
        await service.run_turn("s1", "hello")
    assert isinstance(raised.value.unexpected, ModelDown)  # its traceback goes to the log


def test_content_filtered_is_a_client_error_with_its_own_code():
    error = ContentFilteredError()
    assert (error.status, error.code) == (422, "content_filtered")


@pytest.mark.parametrize(
    ("step", "code"),
    [(EndsWithout("half"), "expected"), (ModelDown("boom"), "unexpected")],
    ids=["expected", "unexpected"],
)
async def test_one_failure_is_one_error_line_in_the_log(make_service, caplog, step, code):
    service = make_service("memory", ScriptedChatClient([step]))
    with caplog.at_level(logging.WARNING):
        response = await _post(service, stream=False)
    assert response.json()["code"] == "model_error"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, caplog.text
    assert "502 model_error (session 's1')" in errors[0].getMessage()
    assert (errors[0].exc_info is not None) == (code == "unexpected")
