"""The HTTP API through the real handlers registered on ``function_app.app``."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

import function_app
from stateful_agent import runtime
from stateful_agent.devhost import build_app, http_functions
from stateful_agent.http import routes as api
from stateful_agent.turns.service import TurnService
from testkit.support import ModelDown, ScriptedChatClient, read_raw, write_raw

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}

#: What a turn without tools or reported usage adds to its body.
NO_EXTRAS = {"approvals": [], "usage": None}


@pytest.fixture
async def client_for(make_service):
    """An HTTP client talking to the ASGI host of ``function_app.app`` with a given service."""
    clients: list[httpx.AsyncClient] = []

    async def make(service: TurnService) -> httpx.AsyncClient:
        await runtime.install(service)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://testserver")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def _client(client_for, make_service, backend, model=None, **settings):
    service = make_service(backend, model or ScriptedChatClient(), **settings)
    return service, await client_for(service)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    anonymous = response.request.url.path == "/api/health"  # the status and code only
    assert set(body) >= PROBLEM_FIELDS - {"detail"} if anonymous else PROBLEM_FIELDS
    assert "detail" not in body or not anonymous
    assert (body["status"], body["code"]) == (status, code)
    assert body["type"].endswith(code)
    assert "Traceback" not in response.text
    return body


def test_function_app_registers_the_routes_with_their_auth_levels():
    routes = {}
    for _, trigger in http_functions(function_app.app):
        for method in trigger.methods:
            routes[(str(method.value), trigger.route)] = str(trigger.auth_level.value)
    assert routes == {
        ("POST", "sessions/{session_id}/turns"): "function",
        ("GET", "sessions/{session_id}/messages"): "function",
        ("POST", "sessions"): "function",
        ("GET", "sessions"): "function",
        ("GET", "sessions/{session_id}"): "function",
        ("DELETE", "sessions/{session_id}"): "function",
        ("GET", "me"): "function",
        ("GET", "ui"): "anonymous",
        ("GET", "health"): "anonymous",
        ("POST", "v1/responses"): "function",
        ("GET", "v1/responses/{response_id}"): "function",
        ("GET", "v1/responses/{response_id}/input_items"): "function",
        ("DELETE", "v1/responses/{response_id}"): "function",
        ("POST", "v1/conversations"): "function",
        ("GET", "v1/conversations/{conversation_id}"): "function",
        ("POST", "v1/conversations/{conversation_id}"): "function",
        ("DELETE", "v1/conversations/{conversation_id}"): "function",
        ("GET", "v1/conversations/{conversation_id}/items"): "function",
        ("POST", "v1/conversations/{conversation_id}/items"): "function",
        ("GET", "v1/conversations/{conversation_id}/items/{item_id}"): "function",
        ("POST", "mcp"): "function",
        ("GET", ".well-known/agent-card.json"): "anonymous",
        ("POST", "a2a"): "function",
    }


async def test_a_conversation_over_http(client_for, make_service, backend):
    model = ScriptedChatClient(["Hello Ada.", "Your name is Ada."])
    _, client = await _client(client_for, make_service, backend, model)

    created = await client.post("/api/sessions")
    assert created.status_code == 201
    session_id = created.json()["session_id"]
    assert created.headers["location"] == f"/api/sessions/{session_id}"
    assert (await client.get(f"/api/sessions/{session_id}")).status_code == 404  # nothing stored yet

    first = await client.post(f"/api/sessions/{session_id}/turns", json={"message": "I am Ada."})
    second = await client.post(f"/api/sessions/{session_id}/turns", json={"message": "Who am I?"})
    assert first.json() == {"session_id": session_id, "turn": 1, "reply": "Hello Ada.", **NO_EXTRAS}
    assert second.json() == {"session_id": session_id, "turn": 2, "reply": "Your name is Ada.", **NO_EXTRAS}

    described = (await client.get(f"/api/sessions/{session_id}")).json()
    assert set(described) == {
        "session_id",
        "title",
        "turns",
        "created_at",
        "updated_at",
        "usage",
        "pending_approvals",
        "messages",
    }
    assert described["turns"] == 2
    assert [m["role"] for m in described["messages"]] == ["user", "assistant", "user", "assistant"]

    assert (await client.delete(f"/api/sessions/{session_id}")).status_code == 204
    assert_problem(await client.get(f"/api/sessions/{session_id}"), 404, "session_not_found")
    assert (await client.delete(f"/api/sessions/{session_id}")).status_code == 204  # idempotent


async def test_health_says_ok_only_and_me_reports_backend_and_model(client_for, make_service, backend):
    _, client = await _client(client_for, make_service, backend)
    response = await client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}  # anonymous: no backend, no model deployment
    me = (await client.get("/api/me")).json()
    assert (me["backend"], me["model"]) == (backend, "echo (offline, no model configured)")


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ({"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ({"json": ["message"]}, 400, "invalid_request"),
        ({"json": {}}, 400, "invalid_request"),
        ({"json": {"message": ""}}, 400, "invalid_request"),
        ({"json": {"message": "   "}}, 400, "invalid_request"),
        ({"json": {"message": 42}}, 400, "invalid_request"),
        ({"json": {"message": "hi", "extra": 1}}, 400, "invalid_request"),
        (
            {"content": b'{"message": "\\ud800"}', "headers": {"content-type": "application/json"}},
            400,
            "invalid_request",
        ),
        ({"content": b'{"message": "hi"}', "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"content": b'{"message": "hi"}'}, 415, "unsupported_media_type"),
        ({"json": {"message": "x" * (32 * 1024 + 1)}}, 413, "message_too_large"),
        ({"json": {"message": "é" * (16 * 1024 + 1)}}, 413, "message_too_large"),
        (
            {"content": b'{"message": "' + b"x" * 300_000 + b'"}', "headers": {"content-type": "application/json"}},
            413,
            "message_too_large",
        ),
    ],
)
async def test_bad_turn_requests_get_problems_and_store_nothing(client_for, make_service, kwargs, status, code):
    service, client = await _client(client_for, make_service, "memory")
    assert_problem(await client.post("/api/sessions/s1/turns", **kwargs), status, code)
    assert await service.store.read("s1") is None


async def test_a_message_at_the_limit_is_accepted(client_for, make_service):
    _, client = await _client(client_for, make_service, "memory")
    response = await client.post("/api/sessions/s1/turns", json={"message": "x" * 32 * 1024})
    assert response.status_code == 200


async def test_the_message_limit_is_configurable(client_for, make_service):
    _, client = await _client(client_for, make_service, "memory", max_message_bytes=10)
    assert_problem(await client.post("/api/sessions/s1/turns", json={"message": "x" * 11}), 413, "message_too_large")
    assert (await client.post("/api/sessions/s1/turns", json={"message": "x" * 10})).status_code == 200


@pytest.mark.parametrize("session_id", ["a%2Fb", "a%23b", "a%3Fb", "a%5Cb", "x" * 129, "-lead", ".dot", "sp%20ace"])
@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
async def test_bad_session_ids_are_rejected(client_for, make_service, session_id, method):
    _, client = await _client(client_for, make_service, "memory")
    path = f"/api/sessions/{session_id}" + ("/turns" if method == "POST" else "")
    response = await client.request(method, path, json={"message": "hi"} if method == "POST" else None)
    assert_problem(response, 400, "invalid_session_id")


async def test_an_empty_session_id_is_rejected_by_the_handler(make_service):
    await runtime.install(make_service("memory"))
    request = _request("GET", "/api/sessions/", {"session_id": ""})
    response = await api.get_session(request)
    assert response.status_code == 400
    assert json.loads(response.body)["code"] == "invalid_session_id"


async def test_valid_id_characters_are_accepted(client_for, make_service):
    _, client = await _client(client_for, make_service, "memory")
    session_id = "Ab9._:-" + "z" * 121
    assert len(session_id) == 128
    response = await client.post(f"/api/sessions/{session_id}/turns", json={"message": "hi"})
    assert response.status_code == 200
    assert response.json()["session_id"] == session_id


async def test_model_failure_is_a_502_and_stores_nothing(client_for, make_service, backend):
    service, client = await _client(client_for, make_service, backend, ScriptedChatClient([ModelDown("secret-detail")]))
    body = assert_problem(await client.post("/api/sessions/s1/turns", json={"message": "hi"}), 502, "model_error")
    assert "secret-detail" not in json.dumps(body)
    assert await service.store.read("s1") is None


async def test_corrupt_snapshot_is_a_500_and_left_unchanged(client_for, make_service, backend):
    service, client = await _client(client_for, make_service, backend)
    await client.post("/api/sessions/s1/turns", json={"message": "hi"})
    record = await service.store.read("s1")
    await write_raw(service.store, "s1", {**record.document.stored(), "schema_version": 99})
    stored = await read_raw(service.store, "s1")

    assert_problem(await client.post("/api/sessions/s1/turns", json={"message": "again"}), 500, "session_corrupt")
    assert_problem(await client.get("/api/sessions/s1"), 500, "session_corrupt")
    assert await read_raw(service.store, "s1") == stored


async def test_too_large_session_is_a_413(client_for, make_service):
    _, client = await _client(
        client_for, make_service, "memory", ScriptedChatClient(["y" * 5000]), max_snapshot_bytes=4096
    )
    assert_problem(await client.post("/api/sessions/s1/turns", json={"message": "hi"}), 413, "session_too_large")


async def test_unreachable_store_is_a_503_with_retry_after(client_for, make_service):
    service, client = await _client(client_for, make_service, "memory")
    from stateful_agent.stores.cosmos import CosmosSnapshotStore

    service.store = CosmosSnapshotStore(endpoint="https://127.0.0.1:9", database="d", container="c", key="a2V5")
    for response in (
        await client.post("/api/sessions/s1/turns", json={"message": "hi"}),
        await client.get("/api/sessions/s1"),
        await client.get("/api/health"),
    ):
        assert_problem(response, 503, "store_unavailable")
        assert int(response.headers["retry-after"]) >= 1


async def test_concurrent_turns_get_200_or_409_and_history_holds_exactly_the_winners(client_for, make_service, backend):
    gate = asyncio.Event()
    model = ScriptedChatClient(gate=gate)
    _, client = await _client(client_for, make_service, backend, model)

    async def open_gate_soon():
        await model.wait_for_requests(10)
        gate.set()

    requests = [client.post("/api/sessions/s1/turns", json={"message": f"m{i}"}) for i in range(10)]
    *responses, _ = await asyncio.gather(*requests, open_gate_soon())

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 409}
    assert statuses.count(200) == 1
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "session_conflict")
    winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
    described = (await client.get("/api/sessions/s1")).json()
    assert [m["text"] for m in described["messages"]] == [f"m{winner}", responses[winner].json()["reply"]]


async def test_configuration_errors_are_reported_as_problems(monkeypatch, caplog):
    await runtime.install(None)
    monkeypatch.setenv("MAF_SESSION_BACKEND", "redis-at-secret-host")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        anonymous = assert_problem(await client.get("/api/health"), 500, "configuration_error")
        body = assert_problem(await client.get("/api/sessions/s1"), 500, "configuration_error")
    assert "MAF_SESSION_BACKEND" in body["detail"]
    assert "detail" not in anonymous  # the status and code only: no setting and no value to an anonymous caller
    assert "redis-at-secret-host" not in json.dumps(anonymous)
    assert any("redis-at-secret-host" in record.getMessage() for record in caplog.records)  # the log has it


async def test_unexpected_errors_are_500s_without_internals(client_for, make_service, caplog):
    service, client = await _client(client_for, make_service, "memory")

    async def broken_read(session_id, owner=""):
        raise RuntimeError("internal secret path /srv/x")

    service.store.read = broken_read
    body = assert_problem(await client.get("/api/sessions/s1"), 500, "internal_error")
    assert "secret" not in json.dumps(body)
    assert "internal secret path" in caplog.text  # the log has it


def _request(method: str, path: str, path_params: dict[str, str]):
    from starlette.requests import Request

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [],
        "query_string": b"",
        "path_params": path_params,
    }
    return Request(scope)
