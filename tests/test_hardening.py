"""The front doors under hostile input: bodies made to be slow, deep, huge or cross-site on every door that parses
JSON (each answered with a 4xx or a JSON-RPC error in the door's own shape, nothing run, the instance serving on),
and forged host headers on the public agent card."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from stateful_agent.http.requests import MAX_JSON_DEPTH, body_limit, parse_json
from stateful_agent.platform.settings import load_settings
from stateful_agent.state.jsontext import nesting
from testkit.hostile import hostile_bodies, sized
from testkit.support import ScriptedChatClient, devhost

LIMIT = body_limit(load_settings({}).max_message_bytes)  # the largest body any JSON door reads
JSON = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


HOSTILE = hostile_bodies(LIMIT)

# Each door: its route, and how it answers a body it cannot parse (400 invalid_json), one too large (413), one
# not sent as JSON (415), in its own shape.
DOORS = {
    "turns": "/api/sessions/s1/turns",
    "responses": "/api/v1/responses",
    "conversations": "/api/v1/conversations",
    "a2a": "/api/a2a",
    "mcp": "/api/mcp",
}


def assert_refused(door: str, response: httpx.Response, status: int, code: str) -> None:
    """``response`` refuses the request in ``door``'s own error shape."""
    assert "Traceback" not in response.text
    body = response.json()
    if door == "turns":
        assert response.headers["content-type"] == "application/problem+json"
        assert (response.status_code, body["status"], body["code"]) == (status, status, code)
    elif door in ("responses", "conversations"):
        assert response.status_code == status
        assert body["error"]["code"] == code
        assert body["error"]["type"] == "invalid_request_error"
    elif door == "a2a":  # a parse error is an ordinary JSON-RPC error; a refused HTTP request has its status
        rpc = -32700 if code == "invalid_json" else -32600
        assert response.status_code == (200 if code == "invalid_json" else status)
        assert (body["jsonrpc"], body["id"], body["error"]["code"]) == ("2.0", None, rpc)
        assert body["error"]["data"]["code"] == code
    else:  # MCP: the SDK parses and checks the media type; the size is ours
        assert response.status_code == status
        assert body["jsonrpc"] == "2.0"
        assert body["error"]["code"] == (-32700 if code == "invalid_json" else -32600)


@pytest.fixture
async def client(make_service):
    model = ScriptedChatClient(["never sent"])
    service = make_service("memory", model)
    await runtime.install(service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as http:
        http.service, http.model = service, model  # type: ignore[attr-defined]
        yield http


async def served_nothing(client: httpx.AsyncClient) -> None:
    """No turn ran, nothing was stored, and the instance still serves."""
    assert client.model.requests == []  # type: ignore[attr-defined]
    assert await client.service.store.list_sessions("", limit=10) == []  # type: ignore[attr-defined]
    assert (await client.get("/api/health")).status_code == 200


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("hostile", HOSTILE)
async def test_a_body_made_to_be_slow_is_refused_at_the_largest_size_each_door_reads(client, door, hostile):
    response = await client.post(DOORS[door], content=HOSTILE[hostile], headers=JSON)
    if door == "mcp" and hostile == "many-objects":  # valid JSON, not one JSON-RPC message: the SDK says so
        assert response.status_code == 400
    else:
        assert_refused(door, response, 400, "invalid_json")
    await served_nothing(client)


@pytest.mark.parametrize("door", DOORS)
async def test_a_body_larger_than_the_door_reads_is_413_before_it_is_read_whole(client, door):
    too_large = sized(b'{"message": "', b"x", LIMIT + 1)
    assert_refused(door, await client.post(DOORS[door], content=too_large, headers=JSON), 413, "message_too_large")

    async def endless():  # no Content-Length: the body is counted as it arrives, and reading stops at the cap
        sent = 0
        while sent <= 4 * LIMIT:
            sent += 64 * 1024
            yield b" " * (64 * 1024)

    streamed = await client.post(DOORS[door], content=endless(), headers=JSON)
    assert_refused(door, streamed, 413, "message_too_large")
    await served_nothing(client)


@pytest.mark.parametrize("door", [door for door in DOORS if door != "mcp"])
@pytest.mark.parametrize("media_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""])
async def test_a_body_a_cross_site_form_can_send_runs_nothing(client, door, media_type):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {}, "message": "hi"})
    response = await client.post(DOORS[door], content=body, headers={"Content-Type": media_type})
    assert_refused(door, response, 415, "unsupported_media_type")
    await served_nothing(client)


async def test_a2a_refuses_deep_and_broken_bodies_as_json_rpc_errors(client):
    for body in (b"[" * 100_000, b"{" * 100_000, b"[" * 40 + b"]" * 40, b"\xff\xfe{}", b'{"jsonrpc": "2.0"'):
        assert_refused("a2a", await client.post(DOORS["a2a"], content=body, headers=JSON), 400, "invalid_json")
    await served_nothing(client)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ('"' + '\\"' * 1000, 0),  # escaped quotes, unterminated
        ('"' + "\\" * 1001, 0),  # a run of backslashes, unterminated
        ('["' + "\\\\" * 500 + '", [[]]]', 3),  # escaped backslashes: the string ends after them
        ('["\\\\\\"[[[[", [1]]', 2),  # an escaped backslash then an escaped quote: still inside the string
        ('{"a": "[{[{", "b": "}]}]"}', 1),
        ("[" * 100_000, 100_000),
        ("[]" * 1000, 1),
        ('[{"a": [{"b": []}]}]', 5),
        ('"[[[', 0),  # an unterminated string hides what follows
        ("", 0),
        ("]]]", 0),
    ],
)
def test_the_depth_check_counts_only_brackets_outside_strings(text, depth):
    assert nesting(text) == depth
    if depth <= MAX_JSON_DEPTH:
        try:
            value = json.loads(text)
        except ValueError:
            return
        assert nesting(json.dumps(value)) == depth


def test_the_depth_check_agrees_with_the_parser_on_nested_json():
    value: object = "x"
    for level in range(MAX_JSON_DEPTH):
        value = [value] if level % 2 else {'k\\"[': value}
        assert parse_json(json.dumps(value).encode()) == value
    with pytest.raises(Exception, match="deeper than"):
        parse_json(json.dumps([value]).encode())


def test_adversarial_bodies_at_the_largest_size_parse_in_linear_time():
    """Each hostile body, at the largest size a door reads and at 16 times that, is refused: a scan that
    backtracks (quadratic) would take hours at the larger size; the watchdog only catches that."""
    script = (
        "import sys\n"
        "from stateful_agent.http.requests import parse_json\n"
        "from tests.test_hardening import HOSTILE\n"
        "for body in HOSTILE.values():\n"
        "    for scale in (1, 16):\n"
        "        try:\n"
        "            parse_json(body * scale)\n"
        "        except Exception as exc:\n"
        "            assert type(exc).__name__ == 'InvalidJsonError', exc\n"
        "        else:\n"
        "            sys.exit('parsed a hostile body')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


FORGED = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"}


@pytest.mark.parametrize(
    ("settings", "base"),
    [
        ({"website_hostname": "agents.azurewebsites.net"}, "https://agents.azurewebsites.net/api"),
        (
            {"website_hostname": "agents.azurewebsites.net", "public_base_url": "https://agents.contoso.com/v2/api"},
            "https://agents.contoso.com/v2/api",
        ),
        ({"website_hostname": "localhost:7071"}, "http://localhost:7071/api"),  # Core Tools' func start
        ({"website_hostname": "[::1]:7071"}, "http://[::1]:7071/api"),
    ],
)
async def test_the_agent_card_names_the_configured_host_whatever_the_request_says(make_service, settings, base):
    await runtime.install(make_service("memory", **settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as http:
        card = await http.get("/api/.well-known/agent-card.json", headers=FORGED)
    assert card.status_code == 200
    assert [i["url"] for i in card.json()["supportedInterfaces"]] == [f"{base}/a2a"]
    assert "evil" not in card.text


def test_on_a_local_host_the_card_names_the_address_it_listens_on_never_a_header(tmp_path):
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {"MAF_SESSION_BACKEND": "memory"}}))
    with devhost(settings) as base:
        card = httpx.get(f"{base}/api/.well-known/agent-card.json", headers=FORGED)
    assert [i["url"] for i in card.json()["supportedInterfaces"]] == [f"{base}/api/a2a"]
    assert "evil" not in card.text
    assert card.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("value", ["agents.contoso.com", "ftp://x/api", "https://x/api?a=1", "https:///api"])
def test_a_bad_public_base_url_is_a_configuration_error(value):
    with pytest.raises(Exception, match="PUBLIC_BASE_URL must be an absolute http"):
        load_settings({"PUBLIC_BASE_URL": value})


async def test_cursors_and_principals_nested_too_deep_are_refused_not_a_recursion_error(make_service):
    import base64

    deep = base64.urlsafe_b64encode(b"[" * 6000).decode()
    await runtime.install(make_service("memory", auth_mode="easyauth", easyauth_local_headers=True))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as http:
        principal = {
            "X-MS-CLIENT-PRINCIPAL-ID": "alice",
            "X-MS-CLIENT-PRINCIPAL": base64.b64encode(b"[" * 6000).decode(),
        }
        alice = {"X-MS-CLIENT-PRINCIPAL-ID": "alice", "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}
        listing = await http.get(f"/api/sessions?cursor={deep}", headers=alice)
        me = await http.get("/api/me", headers=principal)
    assert (listing.status_code, listing.json()["code"]) == (400, "invalid_cursor")
    assert (me.status_code, me.json()["code"]) == (401, "unauthenticated")  # no readable provider: never a 500
    assert "Traceback" not in me.text
