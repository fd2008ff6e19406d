"""Hostile requests: every one gets a problem document with a stable code, never a 5xx or a broken response."""

from __future__ import annotations

import json

import httpx
import pytest

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from stateful_agent.errors import AgentServiceError, InvalidRequestError
from stateful_agent.http import problems as api
from stateful_agent.sessions.cursors import message_cursor as encode_cursor
from testkit.support import ScriptedChatClient

TURN = "/api/sessions/s1/turns"
JSON = {"content-type": "application/json"}


@pytest.fixture
async def client(make_service):
    service = make_service("memory", ScriptedChatClient())
    await runtime.install(service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as http:
        http.service = service  # type: ignore[attr-defined]
        yield http


def problem_of(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = json.loads(response.content.decode("utf-8"))  # strict UTF-8, valid JSON
    assert (body["status"], body["code"]) == (status, code)
    assert "Traceback" not in response.text
    return body


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 50_000,
        b"{" * 50_000,
        b'{"message": ' + b"[" * 40 + b"]" * 40 + b"}",
        b'{"message": "x", "a": ' + b'{"b": ' * 100 + b"1" + b"}" * 100 + b"}",
        b"[" * 20_000 + b"]" * 20_000,
    ],
    ids=["50k-open-arrays", "50k-open-objects", "deep-message", "deep-extra", "20k-balanced"],
)
async def test_deep_nesting_is_a_400_not_a_recursion_error(client, body):
    problem_of(await client.post(TURN, content=body, headers=JSON), 400, "invalid_json")
    assert await client.service.store.read("s1") is None


async def test_brackets_inside_strings_do_not_count_as_nesting(client):
    response = await client.post(TURN, json={"message": "[" * 1000 + "{" * 1000})
    assert response.status_code == 200


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"])
async def test_json_in_utf16_or_utf32_is_invalid_json(client, encoding):
    body = json.dumps({"message": "hello"}).encode(encoding)
    problem_of(await client.post(TURN, content=body, headers=JSON), 400, "invalid_json")
    assert await client.service.store.read("s1") is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"message":"x","\\ud800":1}',
        b'{"message":"x","\\udfff\\ud800":1}',
        b'{"message":"x","' + b"k" * 100_000 + b'":1}',
        b'{"message":"x",' + b",".join(b'"f%d":1' % i for i in range(2000)) + b"}",
        b'{"message":"x","\\u0000\\n\\r<script>":1}',
    ],
    ids=["lone-surrogate-name", "reversed-surrogates", "100k-name", "2000-fields", "control-characters"],
)
async def test_unknown_fields_get_a_bounded_readable_problem(client, body):
    problem = problem_of(await client.post(TURN, content=body, headers=JSON), 400, "invalid_request")
    assert problem["detail"].startswith("Unknown field(s)")
    assert len(problem["detail"]) <= 500


@pytest.mark.parametrize("limit", ["²", "１", "٣", "-1", "0", "201", "1e2", " 5", "5 ", "0x10", "", "9" * 5000])
async def test_a_limit_that_is_not_ascii_digits_from_1_to_200_is_a_400(client, limit):
    await client.post(TURN, json={"message": "hi"})
    problem_of(await client.get("/api/sessions/s1/messages", params={"limit": limit}), 400, "invalid_request")


async def test_ascii_limits_work(client):
    await client.post(TURN, json={"message": "hi"})
    for limit in ("1", "007", "200"):
        assert (await client.get("/api/sessions/s1/messages", params={"limit": limit})).status_code == 200


@pytest.mark.parametrize(
    "cursor",
    [
        encode_cursor(2),  # exactly the end: never returned, the last page has next_cursor null
        encode_cursor(3),
        encode_cursor(10**15),
        "djE6MDAx",  # v1:001, not canonical
        "djE6MQ==",  # v1:1 with padding, not what the API returns
        "djI6MQ",  # v2:1
        "djE6LTE",  # v1:-1
        "djE6wrI",  # v1:² (non-ASCII digit)
        "!!!",
        "",
        "x" * 10_000,
    ],
)
async def test_a_forged_or_out_of_range_cursor_is_invalid_cursor(client, cursor):
    await client.post(TURN, json={"message": "hi"})
    response = await client.get("/api/sessions/s1/messages", params={"cursor": cursor})
    problem_of(response, 400, "invalid_cursor")


async def test_every_cursor_the_api_returns_is_accepted(client):
    for i in range(3):
        await client.post(TURN, json={"message": f"m{i}"})
    cursor, seen = None, []
    while True:
        params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/sessions/s1/messages", params=params)).json()
        seen += [m["index"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(6))


@pytest.mark.parametrize(
    "detail",
    ["\ud800", "a\udfffb" * 100, "x" * 100_000, "\x00\x1b[31m", "é\u2028\u2029"],
    ids=["lone-surrogate", "many-surrogates", "huge", "control", "separators"],
)
def test_the_problem_renderer_never_fails(detail):
    response = api.problem_response(InvalidRequestError(detail), instance="/api/\udc80" + "p" * 5000)
    body = json.loads(response.body.decode("utf-8"))
    assert body["code"] == "invalid_request"
    assert len(body["detail"]) <= 500
    assert response.status_code == 400


def test_a_broken_error_still_renders_a_problem():
    class Broken(AgentServiceError):
        @property
        def status(self):  # type: ignore[override]
            raise RuntimeError("broken status")

    response = api.problem_response(Broken("x"))
    assert response.status_code == 500
    assert json.loads(response.body)["code"] == "internal_error"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/nope", 404, "route_not_found"),
        ("GET", "/", 404, "route_not_found"),
        ("PUT", "/api/sessions/s1", 405, "method_not_allowed"),
        ("PATCH", "/api/sessions/s1/turns", 405, "method_not_allowed"),
        ("GET", "/api/%ED%A0%80", 404, "route_not_found"),
    ],
)
async def test_the_local_host_answers_unknown_routes_and_methods_with_problems(client, method, path, status, code):
    problem_of(await client.request(method, path), status, code)
