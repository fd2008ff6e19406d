"""Identity: every session belongs to the user who started it; users list their own (AUTH_MODE)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from dataclasses import replace

import httpx
import pytest

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from stateful_agent.errors import ConfigurationError, UnauthenticatedError
from stateful_agent.platform.identity import ANONYMOUS, Caller, caller
from stateful_agent.platform.settings import Settings
from stateful_agent.sessions.cursors import listing_cursor as encode_cursor
from testkit.servers import clean_env
from testkit.support import ScriptedChatClient, read_raw, write_raw
from tests.conftest import ROOT

EASYAUTH = {"auth_mode": "easyauth", "easyauth_local_headers": True}


def as_user(name: str, provider: str = "aad") -> dict[str, str]:
    """The headers Easy Auth injects for a signed-in principal."""
    return {"X-MS-CLIENT-PRINCIPAL-ID": name, "X-MS-CLIENT-PRINCIPAL-IDP": provider}


ALICE, BOB = as_user("alice"), as_user("bob")


@pytest.fixture
async def users(make_service, backend):
    """An HTTP client of the app in AUTH_MODE=easyauth (local headers trusted), on each backend."""
    model = ScriptedChatClient()
    service = make_service(backend, model, **EASYAUTH)
    await runtime.install(service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        client.model = model  # type: ignore[attr-defined]
        client.service = service  # type: ignore[attr-defined]
        yield client


async def turn(client: httpx.AsyncClient, who: dict, message: str, session: str = "demo", **headers: str):
    return await client.post(f"/api/sessions/{session}/turns", json={"message": message}, headers={**who, **headers})


# -- isolation --------------------------------------------------------------------------------------------------


async def test_another_users_session_behaves_as_missing_on_every_route(users):
    first = await turn(users, ALICE, "I am Alice.")
    assert first.status_code == 200
    alice_before = (await users.get("/api/sessions/demo", headers=ALICE)).json()

    assert (await users.get("/api/sessions/demo", headers=BOB)).json()["code"] == "session_not_found"
    assert (await users.get("/api/sessions/demo/messages", headers=BOB)).json()["code"] == "session_not_found"
    assert (await users.delete("/api/sessions/demo", headers=BOB)).status_code == 204  # deletes nothing of Alice's
    assert (await users.get("/api/sessions", headers=BOB)).json() == {"sessions": [], "next_cursor": None}

    bobs = await turn(users, BOB, "I am Bob.")  # the same id starts Bob's own session
    assert bobs.json()["turn"] == 1
    assert users.model.requests[-1] == [("user", "I am Bob.")]  # the model never saw Alice's turn

    again = await turn(users, ALICE, "Who am I?")
    assert again.json()["turn"] == 2
    assert users.model.requests[-1] == [
        ("user", "I am Alice."),
        ("assistant", first.json()["reply"]),
        ("user", "Who am I?"),
    ]
    alice_after = (await users.get("/api/sessions/demo", headers=ALICE)).json()
    assert alice_after["messages"][:2] == alice_before["messages"]
    bob_after = (await users.get("/api/sessions/demo", headers=BOB)).json()
    assert [m["text"] for m in bob_after["messages"]] == ["I am Bob.", bobs.json()["reply"]]


async def test_deleting_ones_own_session_leaves_the_other_users_session(users):
    await turn(users, ALICE, "Alice's")
    await turn(users, BOB, "Bob's")
    assert (await users.delete("/api/sessions/demo", headers=BOB)).status_code == 204
    assert (await users.get("/api/sessions/demo", headers=BOB)).status_code == 404
    alice = (await users.get("/api/sessions/demo", headers=ALICE)).json()
    assert alice["messages"][0]["text"] == "Alice's"


async def test_the_same_principal_id_from_another_provider_is_another_user(users):
    await turn(users, as_user("same-id", "aad"), "from Entra")
    response = await users.get("/api/sessions/demo", headers=as_user("same-id", "google"))
    assert response.status_code == 404


async def test_idempotent_replays_never_cross_users(users):
    alice = await turn(users, ALICE, "hello", **{"Idempotency-Key": "k-1"})
    calls = len(users.model.requests)
    bob = await turn(users, BOB, "hello", **{"Idempotency-Key": "k-1"})
    assert bob.status_code == 200
    assert "idempotent-replayed" not in bob.headers  # Bob's turn ran: it is not Alice's stored result
    assert len(users.model.requests) == calls + 1
    assert bob.json()["reply"] != alice.json()["reply"]
    other_message = await turn(users, BOB, "something else", session="alices-only", **{"Idempotency-Key": "k-2"})
    assert other_message.status_code == 200
    assert (await turn(users, ALICE, "mine", session="alices-only", **{"Idempotency-Key": "k-2"})).status_code == 200


async def test_transcripts_stay_with_their_owner(make_service, backend):
    service = make_service(backend, ScriptedChatClient(), compaction_max_messages=4, **EASYAUTH)
    await runtime.install(service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        for i in range(5):
            await turn(client, ALICE, f"alice {i}")
        await turn(client, BOB, "bob 0")
        alice = (await client.get("/api/sessions/demo/messages", headers=ALICE)).json()
        bob = (await client.get("/api/sessions/demo/messages", headers=BOB)).json()
    assert alice["total"] == 10
    assert [m["text"] for m in alice["messages"][::2]] == [f"alice {i}" for i in range(5)]
    assert bob["total"] == 2


@pytest.mark.parametrize("backend_name", ["memory", "file"])
async def test_a_stored_owner_that_does_not_match_its_key_is_corrupt(make_service, backend_name):
    """The second line of defence: a document under Alice's key that names Bob is never served. (In Cosmos DB
    the owner field is the first level of the partition key, so such a document cannot exist there.)"""
    service = make_service(backend_name, **EASYAUTH)
    await runtime.install(service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        await turn(client, ALICE, "hello")
        stored, _ = await read_raw(service.store, "demo", "aad/alice")
        await write_raw(service.store, "demo", {**stored, "owner": "aad/bob"}, "aad/alice")
        response = await client.get("/api/sessions/demo", headers=ALICE)
    assert response.status_code == 500
    assert response.json()["code"] == "session_corrupt"


# -- who is calling --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/sessions/demo/turns"),
        ("GET", "/api/sessions/demo"),
        ("GET", "/api/sessions/demo/messages"),
        ("DELETE", "/api/sessions/demo"),
        ("GET", "/api/sessions"),
        ("POST", "/api/sessions"),
        ("GET", "/api/me"),
    ],
)
async def test_a_session_request_without_a_principal_is_401(users, method, path):
    response = await users.request(method, path, json={"message": "hi"} if path.endswith("turns") else None)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unauthenticated"
    assert (await users.get("/api/health")).status_code == 200  # health stays anonymous


@pytest.mark.parametrize(
    "extra",
    [{}, {"easyauth_local_headers": True, "in_azure": True}],
    ids=["easy-auth-not-enabled", "local-headers-refused-in-azure"],
)
async def test_forged_headers_are_refused_when_easy_auth_is_not_in_front(make_service, extra):
    service = make_service("memory", auth_mode="easyauth", **extra)
    await runtime.install(service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        for method, path in [
            ("POST", "/api/sessions/demo/turns"),
            ("GET", "/api/sessions"),
            ("GET", "/api/sessions/x"),
        ]:
            body = {"message": "hi"} if method == "POST" else None
            response = await client.request(method, path, json=body, headers=ALICE)
            assert response.status_code == 500
            assert response.json()["code"] == "configuration_error"
            assert "WEBSITE_AUTH_ENABLED" in response.json()["detail"]
        assert (await client.get("/api/health")).status_code == 200
    assert await service.store.read("demo", "aad/alice") is None


def _settings(**values) -> Settings:
    return replace(Settings(), **values)


@pytest.mark.parametrize(
    ("settings", "headers", "expected"),
    [
        (_settings(), ALICE, ANONYMOUS),
        (_settings(auth_mode="easyauth", easyauth_enabled=True), ALICE, Caller("aad", "alice")),
        (_settings(auth_mode="easyauth", easyauth_enabled=True, in_azure=True), BOB, Caller("aad", "bob")),
        (
            _settings(**EASYAUTH),
            {**ALICE, "X-MS-CLIENT-PRINCIPAL-NAME": "Alice A."},
            Caller("aad", "alice", "Alice A."),
        ),
        (_settings(auth_mode="header"), {"X-User-Id": "u-42"}, Caller("header", "u-42")),
        (
            _settings(auth_mode="header", auth_user_header="X-Tenant-User"),
            {"X-Tenant-User": "t1:u1"},
            Caller("header", "t1:u1"),
        ),
    ],
)
def test_the_caller_comes_from_the_mode(settings, headers, expected):
    assert caller({k.lower(): v for k, v in headers.items()}, settings) == expected


def test_the_provider_can_come_from_the_principal_document():
    principal = base64.b64encode(json.dumps({"auth_typ": "aad", "claims": []}).encode()).decode()
    headers = {"x-ms-client-principal-id": "alice", "x-ms-client-principal": principal}
    assert caller(headers, _settings(**EASYAUTH)) == Caller("aad", "alice")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-ms-client-principal-idp": "aad"},
        {"x-ms-client-principal-id": "alice"},  # no provider anywhere
        {"x-ms-client-principal-id": "has space", "x-ms-client-principal-idp": "aad"},
        {"x-ms-client-principal-id": "x" * 300, "x-ms-client-principal-idp": "aad"},
        {"x-ms-client-principal-id": "alice", "x-ms-client-principal-idp": "a/b"},
        {"x-ms-client-principal-id": "alice", "x-ms-client-principal": "!!not base64!!"},
    ],
)
def test_a_missing_or_malformed_principal_is_unauthenticated(headers):
    with pytest.raises(UnauthenticatedError):
        caller(headers, _settings(**EASYAUTH))


def test_header_mode_needs_the_header():
    with pytest.raises(UnauthenticatedError):
        caller({}, _settings(auth_mode="header"))


def test_easyauth_without_anything_vouching_for_the_headers_is_a_configuration_error():
    with pytest.raises(ConfigurationError):
        caller({"x-ms-client-principal-id": "a", "x-ms-client-principal-idp": "aad"}, _settings(auth_mode="easyauth"))


def test_owner_keys_of_different_pairs_differ():
    assert Caller("aad", "alice").owner == "aad/alice"
    assert ANONYMOUS.owner == ""


@pytest.mark.parametrize(("mode", "level"), [("easyauth", "anonymous"), ("none", "function"), ("header", "function")])
def test_session_routes_are_anonymous_at_the_functions_level_only_with_easy_auth(mode, level):
    script = (
        "import json, function_app\n"
        "from stateful_agent.devhost import http_functions\n"
        "print(json.dumps({t.route + ' ' + ','.join(str(m.value) for m in t.methods): str(t.auth_level.value)"
        " for _, t in http_functions(function_app.app)}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=clean_env(AUTH_MODE=mode),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    levels = json.loads(completed.stdout.strip().splitlines()[-1])
    assert levels.pop("health GET") == "anonymous"
    assert levels.pop("ui GET") == "anonymous"  # the chat page holds no data; its API calls are checked
    assert levels.pop(".well-known/agent-card.json GET") == "anonymous"  # the public A2A agent card
    assert set(levels.values()) == {level}
    assert len(levels) == 20  # the six session routes, GET /api/me, the Responses API's eleven, MCP and A2A


# -- listing ------------------------------------------------------------------------------------------------


async def test_listing_is_newest_first_paged_and_only_the_callers(users):
    for i in range(7):
        await turn(users, ALICE, f"Session number {i} " + "x" * 100, session=f"s{i}")
    await turn(users, BOB, "Bob's own", session="s0")
    await turn(users, ALICE, "bump", session="s2")  # now the most recently updated

    seen, cursor = [], None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = (await users.get("/api/sessions", params=params, headers=ALICE)).json()
        assert len(page["sessions"]) <= 3
        seen += page["sessions"]
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert len(seen) == 7
    assert seen[0]["session_id"] == "s2"
    assert seen[0]["turns"] == 2
    keys = [(s["updated_at"], s["session_id"]) for s in seen]
    assert keys == sorted(keys, reverse=True)
    assert len(set(keys)) == 7
    first = next(s for s in seen if s["session_id"] == "s0")
    assert first["title"] == ("Session number 0 " + "x" * 100)[:79] + "…"
    assert set(first) == {"session_id", "title", "turns", "created_at", "updated_at"}
    bob = (await users.get("/api/sessions", headers=BOB)).json()["sessions"]
    assert [(s["session_id"], s["title"]) for s in bob] == [("s0", "Bob's own")]


async def test_listing_in_none_mode_lists_every_session(make_service, backend):
    service = make_service(backend, ScriptedChatClient())
    await runtime.install(service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        for name in ("a", "b"):
            await client.post(f"/api/sessions/{name}/turns", json={"message": f"hello {name}"})
        listed = (await client.get("/api/sessions")).json()
    assert sorted(s["session_id"] for s in listed["sessions"]) == ["a", "b"]


@pytest.mark.parametrize(
    "cursor",
    ["x", encode_cursor(("not a time", "s1")), "bDEsMiwz", encode_cursor(("2026-01-01T00:00:00.000Z", "s1")) + "A"],
)
async def test_a_forged_listing_cursor_is_invalid_cursor(users, cursor):
    response = await users.get("/api/sessions", params={"cursor": cursor}, headers=ALICE)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_cursor"


@pytest.mark.parametrize("limit", ["0", "101", "²", "-1", "abc"])
async def test_a_listing_limit_outside_1_to_100_is_a_400(users, limit):
    response = await users.get("/api/sessions", params={"limit": limit}, headers=ALICE)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("settings", "headers", "expected"),
    [
        ({}, ALICE, {"auth_mode": "none", "user": None}),  # shared sessions: headers name nobody
        (
            EASYAUTH,
            {**ALICE, "X-MS-CLIENT-PRINCIPAL-NAME": "alice@contoso.com"},
            {"auth_mode": "easyauth", "user": {"id": "alice", "provider": "aad", "name": "alice@contoso.com"}},
        ),
        (
            {"auth_mode": "header"},
            {"X-User-Id": "u-7"},
            {"auth_mode": "header", "user": {"id": "u-7", "provider": "header", "name": None}},
        ),
    ],
    ids=["none", "easyauth", "header"],
)
async def test_me_says_how_callers_are_identified_and_who_this_one_is(make_service, settings, headers, expected):
    await runtime.install(make_service("memory", ScriptedChatClient(), **settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        response = await client.get("/api/me", headers=headers)
    assert response.status_code == 200
    assert response.json() == {**expected, "backend": "memory", "model": "echo (offline, no model configured)"}
