"""Tools from remote MCP servers: real servers of the official ``mcp`` SDK on loopback, the app's real service."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass

import httpx
import pytest

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from stateful_agent.errors import ConfigurationError
from stateful_agent.platform.mcp import (
    MAX_CALLER_CONNECTIONS,
    MAX_RESULT_CHARS,
    ToolServers,
    bounded,
    session_closed,
)
from stateful_agent.platform.mcp_config import parse_servers
from stateful_agent.platform.settings import load_settings
from testkit.mcp_servers import TokenIssuer, ToolServer
from testkit.servers import free_port
from testkit.support import CallTool, ScriptedChatClient, run_in_new_process, settings_environment, sse_events
from tests.conftest import DURABLE_BACKENDS

TURN = "/api/sessions/s1/turns"
LOCAL_TOOLS = "tests.tools_for_tests:TOOLS"


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def transfer(amount: int, to: str) -> str:
    """Send money."""
    return f"sent {amount} to {to}"


def lookup(item: str) -> str:
    """Look an item up."""
    return f"{item}: found remotely"


def huge() -> str:
    """A result far larger than any model should get."""
    return "x" * (MAX_RESULT_CHARS * 3)


def broken() -> str:
    """Always fails on the server."""
    raise ValueError("the ledger is closed")


def servers(auth_mode: str = "none", **config: dict) -> tuple:
    """Parsed ``AGENT_MCP_SERVERS`` for ``config`` (name -> server object)."""
    return parse_servers(json.dumps({"servers": config}), {}, auth_mode=auth_mode, exchange=True)


def settings_json(**config: dict) -> str:
    return json.dumps({"servers": config})


async def http(service) -> httpx.AsyncClient:
    await runtime.install(service)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t")


@pytest.fixture
def calc():
    with ToolServer("calc", {"add": add, "transfer": transfer, "huge": huge, "broken": broken}) as server:
        yield server


# -- calls end to end ---------------------------------------------------------------------------------------


async def test_an_mcp_tool_call_end_to_end_with_the_transcript_and_usage(make_service, backend, calc):
    model = ScriptedChatClient([CallTool("add", {"a": 2, "b": 3}), "It is 5."], usage=(10, 2))
    config = servers(calc={"url": calc.url, "readOnly": True})
    async with await http(make_service(backend, model, mcp_servers=config)) as client:
        response = await client.post(TURN, json={"message": "2+3?"})
        page = (await client.get("/api/sessions/s1/messages")).json()
    assert response.status_code == 200, response.text
    assert response.json()["reply"] == "It is 5."
    assert response.json()["usage"] == {"input_tokens": 20, "output_tokens": 4, "total_tokens": 24}
    assert calc.calls == [("add", {"a": 2, "b": 3}, None)]
    assert "add" in model.offered[0]
    assert "transfer" in model.offered[0]
    assert page["messages"][1]["tool_calls"] == [{"id": "call-1", "name": "add", "arguments": {"a": 2, "b": 3}}]
    assert page["messages"][2] == {
        "index": 2,
        "role": "tool",
        "tool_call_id": "call-1",
        "name": "add",
        "result": '{"result": 5}',
    }


async def test_a_streamed_mcp_tool_turn_reports_the_call_and_its_result(make_service, calc):
    model = ScriptedChatClient([CallTool("add", {"a": 1, "b": 1}), "Two."])
    config = servers(calc={"url": calc.url, "approval": "never"})
    async with await http(make_service("memory", model, mcp_servers=config)) as client:
        response = await client.post(TURN, json={"message": "1+1"}, headers={"Accept": "text/event-stream"})
    events = sse_events(response.text)
    assert [kind for kind, _ in events] == ["tool_call", "tool_result", "delta", "done"]
    assert events[0][1] == {"id": "call-1", "name": "add", "arguments": {"a": 1, "b": 1}}
    assert events[1][1] == {"id": "call-1", "name": "add", "result": '{"result": 2}'}


async def test_a_failing_tool_and_an_mcp_error_are_error_results_and_the_turn_is_stored(make_service, calc):
    model = ScriptedChatClient([CallTool("broken", {}), "It failed."])
    service = make_service("memory", model, mcp_servers=servers(calc={"url": calc.url, "approval": "never"}))
    async with await http(service) as client:
        response = await client.post(TURN, json={"message": "go"})
        page = (await client.get("/api/sessions/s1/messages")).json()
    assert (response.status_code, response.json()["reply"]) == (200, "It failed.")
    assert page["messages"][2]["role"] == "tool"
    assert page["messages"][2]["name"] == "broken"
    assert "5" not in str(page["messages"][2]["result"])
    assert [call[0] for call in calc.calls] == ["broken"]


async def test_a_huge_result_is_cut_before_the_model_and_the_store_see_it(make_service, calc):
    model = ScriptedChatClient([CallTool("huge", {}), "Long."])
    service = make_service("memory", model, mcp_servers=servers(calc={"url": calc.url, "readOnly": True}))
    async with await http(service) as client:
        assert (await client.post(TURN, json={"message": "go"})).status_code == 200
        result = (await client.get("/api/sessions/s1/messages")).json()["messages"][2]["result"]
    assert MAX_RESULT_CHARS <= len(result) < MAX_RESULT_CHARS + 200
    assert result.endswith(" more characters were left out]")
    assert result.startswith('{"result": "xxxx')


def test_bounded_keeps_small_results_and_cuts_text_and_large_parts():
    from agent_framework import Content

    assert bounded("short", 10) == "short"
    assert bounded("0123456789abc", 10) == "0123456789\n[result cut: 3 more characters were left out]"
    parts = bounded([Content.from_text("abcdef"), Content.from_text("ghijkl")], 8)
    assert [p.text for p in parts] == ["abcdef", "gh", "\n[result cut: 4 more characters were left out]"]
    image = Content.from_uri("data:image/png;base64," + "A" * 100, media_type="image/png")
    parts = bounded([Content.from_text("see"), image], 50)
    assert [p.type for p in parts] == ["text", "text"]


async def test_a_slow_tool_times_out_as_an_error_result_and_the_turn_is_stored(make_service):
    release, finished = threading.Event(), []

    async def stuck() -> str:
        """Runs until the test lets it finish."""
        await asyncio.to_thread(release.wait, 30)
        finished.append(True)
        return "finally"

    with ToolServer("slowpoke", {"stuck": stuck}) as server:
        model = ScriptedChatClient([CallTool("stuck", {}), "Too slow."])
        config = servers(slowpoke={"url": server.url, "readOnly": True, "timeoutSeconds": 0.5})
        async with await http(make_service("memory", model, mcp_servers=config)) as client:
            response = await client.post(TURN, json={"message": "wait"})
            unfinished = not finished  # the turn ended while the tool was still running
            release.set()
            page = (await client.get("/api/sessions/s1/messages")).json()
    assert (response.status_code, response.json()["reply"]) == (200, "Too slow.")
    assert unfinished
    assert page["messages"][2]["name"] == "stuck"
    assert page["messages"][2]["result"] != "finally"


def book(session: str, tools: str = "none", options: str = "") -> str:
    """Book a class (its arguments share names with MAF's own run context)."""
    return f"{session} with {tools}"


async def test_arguments_named_like_the_frameworks_reach_the_server(make_service):
    with ToolServer("gym", {"book": book}) as gym:
        steps = [
            CallTool("book", {"session": "yoga", "tools": "a mat"}),
            "Booked.",
            CallTool("book", {"session": "spin"}),
            "Again.",
        ]
        model = ScriptedChatClient(steps)
        service = make_service("memory", model, mcp_servers=servers(gym={"url": gym.url, "readOnly": True}))
        first = await service.run_turn("s1", "book yoga")
        second = await service.run_turn("s1", "book spin")
    assert (first.reply, second.reply) == ("Booked.", "Again.")
    assert [call[1]["session"] for call in gym.calls] == ["yoga", "spin"]
    assert [call[1]["tools"] for call in gym.calls] == ["a mat", "none"]  # the model's value, else the default


# -- approvals ----------------------------------------------------------------------------------------------


async def test_an_mcp_tool_waits_for_approval_by_default_and_a_rejection_never_calls_the_server(make_service, calc):
    model = ScriptedChatClient([CallTool("transfer", {"amount": 5, "to": "bob"}), "Not sent."])
    async with await http(make_service("memory", model, mcp_servers=servers(calc={"url": calc.url}))) as client:
        asked = (await client.post(TURN, json={"message": "pay bob"})).json()
        (approval,) = asked["approvals"]
        assert approval["name"] == "transfer"
        rejected = await client.post(TURN, json={"approvals": [{"id": approval["id"], "approved": False}]})
    assert (rejected.status_code, rejected.json()["reply"]) == (200, "Not sent.")
    assert calc.calls == []
    assert calc.requests("tools/call") == []


@pytest.mark.parametrize("backend", DURABLE_BACKENDS)
async def test_an_approval_answered_in_a_new_process_calls_the_server_exactly_once(backend, backend_settings, calc):
    env = settings_environment(backend, backend_settings(backend)) | {
        "AGENT_MCP_SERVERS": settings_json(calc={"url": calc.url, "approval": {"always": ["transfer"]}}),
    }
    step = {"call": "transfer", "arguments": {"amount": 7, "to": "carol"}, "text": "Shall I?"}
    asked = run_in_new_process("tests.tool_turn", json.dumps({"message": "pay carol 7"}), json.dumps([step]), env=env)
    (approval,) = asked["body"]["approvals"]
    assert calc.calls == []

    answer = json.dumps({"approvals": [{"id": approval["id"], "approved": True}]})
    answered = run_in_new_process("tests.tool_turn", answer, json.dumps(["Paid carol."]), env=env)
    assert (answered["status"], answered["body"]["reply"]) == (200, "Paid carol.")
    assert calc.calls == [("transfer", {"amount": 7, "to": "carol"}, None)]

    repeated = run_in_new_process("tests.tool_turn", answer, json.dumps(["must not run"]), env=env)
    assert (repeated["status"], repeated["body"]["code"]) == (409, "approval_not_pending")
    assert len(calc.calls) == 1


async def test_two_racing_answers_call_the_server_at_most_once(make_service, backend, calc):
    gate = asyncio.Event()
    steps = [CallTool("transfer", {"amount": 5, "to": "bob"}), "first answer done", "second answer done"]
    model = ScriptedChatClient(steps, gate=gate)
    service = make_service(backend, model, mcp_servers=servers(calc={"url": calc.url}))
    gate.set()
    (approval,) = (await service.run_turn("s1", "pay bob")).approvals
    gate.clear()
    answer = [(approval["id"], True)]
    tasks = [asyncio.create_task(service.run_turn("s1", None, answers=answer)) for _ in range(2)]
    await asyncio.sleep(0.3)  # both have read the pending approval; one claim won, the other lost before any tool
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert len([r for r in results if not isinstance(r, BaseException)]) == 1
    assert [type(r).__name__ for r in results if isinstance(r, BaseException)] in (
        ["SessionConflictError"],
        ["ApprovalNotPendingError"],
    )
    assert calc.calls == [("transfer", {"amount": 5, "to": "bob"}, None)]


async def test_approval_per_tool_follows_the_configuration(make_service, calc):
    model = ScriptedChatClient()
    config = servers(calc={"url": calc.url, "approval": {"always": ["transfer"], "never": ["huge"]}})
    service = make_service("memory", model, mcp_servers=config)
    tools = {t.name: t.approval_mode for t in await service.tool_servers.tools()}
    assert tools == {
        "add": "always_require",
        "transfer": "always_require",
        "huge": "never_require",
        "broken": "always_require",
    }
    read_only = make_service("memory", model, mcp_servers=servers(calc={"url": calc.url, "readOnly": True}))
    assert {t.approval_mode for t in await read_only.tool_servers.tools()} == {"never_require"}


# -- connections --------------------------------------------------------------------------------------------


async def test_after_warm_up_a_turn_without_mcp_calls_sends_nothing_to_the_server(make_service, calc):
    model = ScriptedChatClient([CallTool("add", {"a": 1, "b": 2}), "3.", "hello", "again"])
    service = make_service("memory", model, mcp_servers=servers(calc={"url": calc.url, "readOnly": True}))
    async with await http(service) as client:
        await client.post(TURN, json={"message": "1+2"})
        await asyncio.sleep(0.2)
        before = len(calc.seen)
        for text in ("hi", "and again"):
            assert (await client.post(TURN, json={"message": text})).status_code == 200
        await asyncio.sleep(0.2)
    assert calc.seen[before:] == []
    assert len(calc.requests("initialize")) + len(calc.requests("server/discover")) == 1  # one connection


async def test_an_unreachable_optional_server_is_left_out_and_a_required_one_fails_the_turn(make_service, calc, caplog):
    down = f"http://127.0.0.1:{free_port()}/mcp"
    model = ScriptedChatClient(["fine without it"])
    config = servers(calc={"url": calc.url, "readOnly": True}, gone={"url": down})
    async with await http(make_service("memory", model, mcp_servers=config)) as client:
        with caplog.at_level(logging.WARNING):
            response = await client.post(TURN, json={"message": "hi"})
    assert (response.status_code, response.json()["reply"]) == (200, "fine without it")
    assert "add" in model.offered[0]
    assert [r.getMessage() for r in caplog.records if "'gone'" in r.getMessage()] == [
        next(r.getMessage() for r in caplog.records if "'gone'" in r.getMessage())
    ]

    model = ScriptedChatClient(["never"])
    required = servers(calc={"url": calc.url}, gone={"url": down, "required": True})
    service = make_service("memory", model, mcp_servers=required)
    async with await http(service) as client:
        failed = await client.post(TURN, json={"message": "hi"})
        missing = await client.get("/api/sessions/s1")
    assert failed.status_code == 503
    assert failed.headers["content-type"] == "application/problem+json"
    assert failed.json()["code"] == "tool_server_unavailable"
    assert "'gone'" in failed.json()["detail"]
    assert failed.headers["retry-after"]
    assert model.requests == []
    assert missing.status_code == 404  # nothing stored


async def test_an_approved_call_of_a_server_that_went_away_is_503_and_can_be_answered_again(make_service):
    with ToolServer("bank", {"transfer": transfer}) as bank:
        model = ScriptedChatClient([CallTool("transfer", {"amount": 1, "to": "eve"}), "Done."])
        service = make_service("memory", model, mcp_servers=servers(bank={"url": bank.url}))
        async with await http(service) as client:
            (approval,) = (await client.post(TURN, json={"message": "pay"})).json()["approvals"]
            bank.stop()
            await service.tool_servers.close()  # a new instance: it has never connected
            answer = {"approvals": [{"id": approval["id"], "approved": True}]}
            refused = await client.post(TURN, json=answer)
            assert (refused.status_code, refused.json()["code"]) == (503, "tool_server_unavailable")
            bank.start()
            accepted = await client.post(TURN, json=answer)
    assert (accepted.status_code, accepted.json()["reply"]) == (200, "Done.")
    assert [call[0] for call in bank.calls] == ["transfer"]


async def test_a_server_restarted_mid_run_is_reconnected(make_service):
    with ToolServer("calc", {"add": add}) as server:
        model = ScriptedChatClient([CallTool("add", {"a": 1, "b": 1}), "2.", CallTool("add", {"a": 2, "b": 2}), "4."])
        service = make_service("memory", model, mcp_servers=servers(calc={"url": server.url, "readOnly": True}))
        async with await http(service) as client:
            assert (await client.post(TURN, json={"message": "one"})).status_code == 200
            server.stop()
            server.start()
            second = await client.post(TURN, json={"message": "two"})
            page = (await client.get("/api/sessions/s1/messages")).json()
    assert (second.status_code, second.json()["reply"]) == (200, "4.")
    assert [call[1] for call in server.calls] == [{"a": 1, "b": 1}, {"a": 2, "b": 2}]
    assert page["messages"][-2]["result"] == '{"result": 4}'


async def test_a_server_that_went_down_and_came_back_is_reached_by_the_next_call(make_service):
    with ToolServer("orders", {"add": add}) as server:
        model = ScriptedChatClient(
            [
                CallTool("add", {"a": 1, "b": 1}),
                "2.",
                CallTool("add", {"a": 2, "b": 2}),
                "down.",
                CallTool("add", {"a": 3, "b": 3}),
                "6.",
            ]
        )
        config = servers(orders={"url": server.url, "readOnly": True, "timeoutSeconds": 5})
        service = make_service("memory", model, mcp_servers=config)
        async with await http(service) as client:
            assert (await client.post(TURN, json={"message": "one"})).status_code == 200
            server.stop()
            down = await client.post(TURN, json={"message": "two"})
            server.start()
            back = await client.post(TURN, json={"message": "three"})
            page = (await client.get("/api/sessions/s1/messages")).json()
    assert down.status_code == 200  # the failed call is the tool's error result, the turn is stored
    results = [m["result"] for m in page["messages"] if m.get("result") is not None]
    assert results[0] == '{"result": 2}'
    assert "Error" in results[1] or "error" in results[1]
    assert (back.status_code, back.json()["reply"]) == (200, "6.")
    assert results[2] == '{"result": 6}'
    assert [call[1] for call in server.calls] == [{"a": 1, "b": 1}, {"a": 3, "b": 3}]


async def test_a_server_that_went_away_between_turns_is_reached_by_the_first_call_after_it_is_back(make_service):
    with ToolServer("orders", {"add": add}) as server:
        model = ScriptedChatClient([CallTool("add", {"a": 1, "b": 1}), "2.", CallTool("add", {"a": 3, "b": 3}), "6."])
        config = servers(orders={"url": server.url, "readOnly": True, "timeoutSeconds": 5})
        service = make_service("memory", model, mcp_servers=config)
        async with await http(service) as client:
            assert (await client.post(TURN, json={"message": "one"})).status_code == 200
            server.stop()
            for _ in range(200):  # until the client has seen its connection end (no call was made meanwhile)
                if session_closed(tool_of(service)):
                    break
                await asyncio.sleep(0.05)
            assert session_closed(tool_of(service))  # the private state it reads still says so
            server.start()
            back = await client.post(TURN, json={"message": "two"})
            page = (await client.get("/api/sessions/s1/messages")).json()
    assert (back.status_code, back.json()["reply"]) == (200, "6.")
    results = [m["result"] for m in page["messages"] if m.get("result") is not None]
    assert results == ['{"result": 2}', '{"result": 6}']
    assert [call[1] for call in server.calls] == [{"a": 1, "b": 1}, {"a": 3, "b": 3}]


def tool_of(service):
    """The one MCP connection the service holds (the ``ServerTool`` the next turn would use)."""
    (connection,) = service.tool_servers.connections()
    return connection


async def test_the_tool_list_is_refreshed_when_the_server_announces_a_change(make_service):
    def sub(a: int, b: int) -> int:
        """Subtract."""
        return a - b

    with ToolServer("calc", {"add": add}) as server:
        model = ScriptedChatClient(["one", CallTool("sub", {"a": 5, "b": 3}), "2."])
        service = make_service("memory", model, mcp_servers=servers(calc={"url": server.url, "readOnly": True}))
        async with await http(service) as client:
            await client.post(TURN, json={"message": "first"})
            listed = len(server.requests("tools/list"))
            server.add_tool("sub", sub)
            for _ in range(100):  # MAF reloads the list in the background when the server announces it
                if len(server.requests("tools/list")) > listed:
                    break
                await asyncio.sleep(0.05)
            second = await client.post(TURN, json={"message": "second"})
    assert model.offered[0] == ["add"]
    assert model.offered[1] == ["add", "sub"]
    assert second.json()["reply"] == "2."
    assert [call[0] for call in server.calls] == ["sub"]


async def test_clashing_tool_names_are_prefixed_with_the_server_name(make_service, calc):
    with ToolServer("docs", {"lookup": lookup, "add": add}) as docs:
        model = ScriptedChatClient([CallTool("docs_lookup", {"item": "x"}), "ok"])
        config = servers(calc={"url": calc.url, "readOnly": True}, docs={"url": docs.url, "readOnly": True})
        service = make_service("memory", model, mcp_servers=config, agent_tools=LOCAL_TOOLS)
        async with await http(service) as client:
            response = await client.post(TURN, json={"message": "look"})
    assert response.status_code == 200
    offered = model.offered[0]
    assert {"lookup", "explode", "transfer"} <= set(offered)  # the local tools keep their names
    assert {"calc_add", "calc_transfer", "docs_add", "docs_lookup"} <= set(offered)
    assert "add" not in offered
    assert docs.calls == [("lookup", {"item": "x"}, None)]


# -- authentication -----------------------------------------------------------------------------------------


async def test_static_headers_come_from_app_settings(make_service, monkeypatch):
    with ToolServer("secure", {"add": add}, token="s3cret-token") as server:
        monkeypatch.setenv("SECURE_TOKEN", "s3cret-token")
        config = json.dumps(
            {
                "servers": {
                    "secure": {
                        "url": server.url,
                        "readOnly": True,
                        "headers": {"Authorization": "Bearer ${env:SECURE_TOKEN}"},
                    }
                }
            }
        )
        settings = load_settings({"AGENT_MCP_SERVERS": config, "SECURE_TOKEN": "s3cret-token"})
        model = ScriptedChatClient([CallTool("add", {"a": 3, "b": 4}), "7."])
        async with await http(make_service("memory", model, mcp_servers=settings.mcp_servers)) as client:
            response = await client.post(TURN, json={"message": "3+4"})
    assert response.json()["reply"] == "7."
    assert server.calls == [("add", {"a": 3, "b": 4}, "Bearer s3cret-token")]
    assert "s3cret-token" not in repr(settings.mcp_servers[0].model_dump(exclude={"headers"}))


@dataclass
class Token:
    token: str
    expires_on: int


class CountingCredential:
    """A managed identity stand-in (Entra is not reachable here): tokens that expire in ``lifetime`` seconds."""

    def __init__(self, lifetime: int) -> None:
        self.lifetime, self.scopes, self.closed = lifetime, [], False

    async def get_token(self, *scopes: str) -> Token:
        self.scopes.append(scopes)
        return Token(f"mi-token-{len(self.scopes)}", int(time.time()) + self.lifetime)

    async def close(self) -> None:
        self.closed = True


async def test_managed_identity_tokens_are_sent_and_renewed_before_they_expire():
    with ToolServer(
        "graph", {"add": add}, accept=lambda auth: bool(auth and auth.startswith("Bearer mi-token-"))
    ) as srv:
        config = servers(graph={"url": srv.url, "auth": {"type": "managedIdentity", "scope": "api://graph/.default"}})
        fresh = CountingCredential(lifetime=3600)
        pool = ToolServers(config, credential=fresh)
        for _ in range(3):
            (tool,) = await pool.tools()
        await tool.invoke(arguments={"a": 1, "b": 2})
        assert fresh.scopes == [("api://graph/.default",)]  # cached
        assert srv.calls[-1][2] == "Bearer mi-token-1"
        await pool.close()
        assert not fresh.closed  # injected: the caller owns it

        expiring = CountingCredential(lifetime=60)  # inside the renewal window: renewed on every turn
        pool = ToolServers(config, credential=expiring)
        (tool,) = await pool.tools()
        (tool,) = await pool.tools()
        await tool.invoke(arguments={"a": 1, "b": 2})
        assert len(expiring.scopes) == 2
        assert srv.calls[-1][2] == "Bearer mi-token-2"  # the new token, on a new connection
        await pool.close()


CALLER_SETTINGS = {
    "auth_mode": "easyauth",
    "easyauth_local_headers": True,
    "auth_client_id": "app-registration",
    "auth_tenant_id": "contoso",
}


async def test_caller_auth_sends_each_server_only_a_token_for_its_own_scope_never_the_callers(make_service, caplog):
    issuer = TokenIssuer()
    alice, bob = "alice-inbound-token", "bob-inbound-token"
    mine_scope, yours_scope = "api://mine/.default", "api://yours/.default"
    mine_tokens = {f"Bearer {issuer.token_for(t, mine_scope)}" for t in (alice, bob)}
    yours_tokens = {f"Bearer {issuer.token_for(t, yours_scope)}" for t in (alice, bob)}
    with (
        ToolServer("mine", {"add": add}, accept=lambda auth: auth in mine_tokens) as mine,
        ToolServer("yours", {"lookup": lookup}, accept=lambda auth: auth in yours_tokens) as yours,
        ToolServer("other", {"echo_it": lambda text: text}) as other,
    ):
        config = {
            "mine": {"url": mine.url, "readOnly": True, "auth": {"type": "caller", "scope": mine_scope}},
            "yours": {"url": yours.url, "readOnly": True, "auth": {"type": "caller", "scope": yours_scope}},
            "other": {"url": other.url, "readOnly": True},
        }
        parsed = parse_servers(json.dumps({"servers": config}), {}, auth_mode="easyauth", exchange=True)
        model = ScriptedChatClient(
            [
                CallTool("add", {"a": 1, "b": 1}),
                "2.",
                CallTool("lookup", {"item": "y"}),
                "ok",
                CallTool("add", {"a": 5, "b": 5}),
                "10.",
            ]
        )
        service = make_service("file", model, mcp_servers=parsed, **CALLER_SETTINGS)
        service.tool_servers.exchange = issuer

        def user(name: str, token: str) -> dict[str, str]:
            return {
                "X-MS-CLIENT-PRINCIPAL-ID": name,
                "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
                "Authorization": f"Bearer {token}",
            }

        with caplog.at_level(logging.DEBUG):
            async with await http(service) as client:
                for text, name, token in (("a", "alice", alice), ("b", "alice", alice), ("c", "bob", bob)):
                    response = await client.post(TURN, json={"message": text}, headers=user(name, token))
                    assert response.status_code == 200, response.text
                no_token = await client.post(
                    TURN,
                    json={"message": "d"},
                    headers={"X-MS-CLIENT-PRINCIPAL-ID": "carol", "X-MS-CLIENT-PRINCIPAL-IDP": "aad"},
                )
                alice_without_token = await client.post(
                    TURN,
                    json={"message": "e"},
                    headers={"X-MS-CLIENT-PRINCIPAL-ID": "alice", "X-MS-CLIENT-PRINCIPAL-IDP": "aad"},
                )
    assert alice_without_token.status_code == 200
    assert "add" not in model.offered[-1]  # her cached token is not used for a request that presents none
    assert [(c[1], c[2]) for c in mine.calls] == [
        ({"a": 1, "b": 1}, f"Bearer {issuer.token_for(alice, mine_scope)}"),
        ({"a": 5, "b": 5}, f"Bearer {issuer.token_for(bob, mine_scope)}"),
    ]
    assert yours.calls == [("lookup", {"item": "y"}, f"Bearer {issuer.token_for(alice, yours_scope)}")]
    assert {seen.authorization for seen in mine.seen} == mine_tokens  # only its own scope's, for each user
    assert {seen.authorization for seen in yours.seen} == yours_tokens
    assert all(seen.authorization is None for seen in other.seen)
    # one exchange per user and server, cached across turns
    assert sorted(issuer.exchanges) == sorted((t, s) for t in (alice, bob) for s in (mine_scope, yours_scope))
    assert no_token.status_code == 200  # an optional server that acts as the caller is left out without a token
    assert "add" not in model.offered[-1]
    secrets = (alice, bob, *(t.split(" ")[1] for t in mine_tokens | yours_tokens))
    for text in [r.getMessage() for r in caplog.records]:
        assert not [secret for secret in secrets if secret in text]
    stored = [path.read_text() for path in service.settings.session_dir.rglob("*.json")]
    assert len(stored) == 3  # alice's, bob's and carol's sessions
    assert not any(secret in text for text in stored for secret in secrets)


async def test_caller_tokens_are_exchanged_again_before_they_expire_and_a_refused_exchange_is_a_503(make_service):
    scope = "api://mine/.default"
    issuer = TokenIssuer(lifetime=60)  # inside the renewal window: exchanged again on every turn
    with ToolServer("mine", {"add": add}, accept=lambda auth: bool(auth and auth.startswith("Bearer obo|"))) as srv:
        config = {
            "mine": {"url": srv.url, "readOnly": True, "required": True, "auth": {"type": "caller", "scope": scope}}
        }
        parsed = parse_servers(json.dumps({"servers": config}), {}, auth_mode="easyauth", exchange=True)
        model = ScriptedChatClient([CallTool("add", {"a": 1, "b": 2}), "3.", CallTool("add", {"a": 2, "b": 2}), "4."])
        service = make_service("memory", model, mcp_servers=parsed, **CALLER_SETTINGS)
        service.tool_servers.exchange = issuer
        headers = {"X-MS-CLIENT-PRINCIPAL-ID": "alice", "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}
        async with await http(service) as client:
            for token in ("first-token", "second-token"):
                response = await client.post(
                    TURN, json={"message": "add"}, headers={**headers, "Authorization": f"Bearer {token}"}
                )
                assert response.status_code == 200, response.text

            class Refusing:
                async def exchange(self, assertion: str, scope: str):
                    raise RuntimeError(f"AADSTS65001: no consent for {assertion}")

                async def close(self) -> None: ...

            service.tool_servers.exchange = Refusing()
            dave = {"X-MS-CLIENT-PRINCIPAL-ID": "dave", "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}
            refused = await client.post(
                TURN, json={"message": "add"}, headers={**dave, "Authorization": "Bearer third-token"}
            )
    assert [e[0] for e in issuer.exchanges] == ["first-token", "second-token"]
    assert [c[2] for c in srv.calls] == [
        f"Bearer {issuer.token_for(t, scope)}" for t in ("first-token", "second-token")
    ]
    assert refused.status_code == 503
    assert refused.json()["code"] == "tool_server_unavailable"
    assert "third-token" not in refused.text


# -- configuration ------------------------------------------------------------------------------------------

GOOD = {"url": "https://tools.contoso.com/mcp"}


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ("{not json", "AGENT_MCP_SERVERS is not valid JSON"),
        ('["a"]', 'must be a JSON object {"servers"'),
        (json.dumps({"servers": {}, "inputs": []}), "unknown key 'inputs'"),
        (json.dumps({"servers": {"docs": {**GOOD, "colour": "red"}}}), "server 'docs': unknown key 'colour'"),
        (json.dumps({"servers": {"docs": {"type": "http"}}}), "server 'docs': 'url' is required"),
        (json.dumps({"servers": {"docs": {"url": "ftp://x/mcp"}}}), "server 'docs': 'url' must be an absolute http(s)"),
        (json.dumps({"servers": {"docs": {"url": "tools/mcp"}}}), "server 'docs': 'url' must be an absolute http(s)"),
        (
            json.dumps({"servers": {"docs": {"url": "https://u:p@x/mcp"}}}),
            "server 'docs': 'url' must not hold credentials",
        ),
        (json.dumps({"servers": {"docs": {**GOOD, "type": "stdio"}}}), "server 'docs': 'type'"),
        (json.dumps({"servers": {"docs": {**GOOD, "approval": "sometimes"}}}), "server 'docs': 'approval"),
        (
            json.dumps({"servers": {"docs": {**GOOD, "approval": {"maybe": ["a"]}}}}),
            "server 'docs': unknown key 'approval.maybe'",
        ),
        (json.dumps({"servers": {"docs": {**GOOD, "timeoutSeconds": 0}}}), "server 'docs': 'timeoutSeconds'"),
        (json.dumps({"servers": {"docs": {**GOOD, "auth": {"type": "basic"}}}}), "server 'docs': 'auth"),
        (
            json.dumps({"servers": {"docs": {**GOOD, "auth": {"type": "managedIdentity"}}}}),
            "'auth.managedIdentity.scope' is required",
        ),
        (
            json.dumps({"servers": {"docs": {**GOOD, "auth": {"type": "caller", "scope": "api://docs/.default"}}}}),
            "server 'docs': 'auth' type 'caller' needs AUTH_MODE=easyauth",
        ),
        (
            json.dumps({"servers": {"docs": {**GOOD, "auth": {"type": "caller"}}}}),
            "server 'docs': 'auth.caller.scope' is required",
        ),
        (
            json.dumps(
                {
                    "servers": {
                        "docs": {
                            "url": "http://tools.contoso.com/mcp",
                            "auth": {"type": "managedIdentity", "scope": "s"},
                        }
                    }
                }
            ),
            "server 'docs': 'auth' would send a token over plain http:// to 'tools.contoso.com'",
        ),
        (
            json.dumps({"servers": {"docs": {"url": "http://10.0.0.5/mcp", "headers": {"X-Api-Key": "k"}}}}),
            "server 'docs': header 'X-Api-Key' would send a credential over plain http:// to '10.0.0.5'",
        ),
        (
            json.dumps({"servers": {"docs": {"url": "http://tools/mcp", "headers": {"Authorization": "Bearer x"}}}}),
            "header 'Authorization' would send a credential over plain http://",
        ),
        (
            json.dumps({"servers": {"docs": {"url": "http://tools/mcp", "headers": {"X-Tenant": "${env:HOME}"}}}}),
            "header 'X-Tenant' would send a credential over plain http://",
        ),
        (
            json.dumps({"servers": {"docs": {**GOOD, "headers": {"X-Key": "${env:MISSING_KEY}"}}}}),
            "server 'docs': header 'X-Key' references MISSING_KEY, which is not set",
        ),
        (
            json.dumps({"servers": {"docs": {**GOOD, "headers": {"Bad Header": "x"}}}}),
            "server 'docs': 'headers' cannot set 'Bad Header'",
        ),
        (
            json.dumps({"servers": {"docs": {**GOOD, "headers": {"Mcp-Session-Id": "x"}}}}),
            "'headers' cannot set 'Mcp-Session-Id'",
        ),
        (
            json.dumps(
                {
                    "servers": {
                        "docs": {
                            **GOOD,
                            "headers": {"Authorization": "x"},
                            "auth": {"type": "managedIdentity", "scope": "s"},
                        }
                    }
                }
            ),
            "server 'docs': 'headers' sets Authorization, which 'auth' already sends",
        ),
        (json.dumps({"servers": {"1docs": GOOD}}), "server '1docs': a name is a letter"),
        (json.dumps({"servers": {"docs": "https://x/mcp"}}), "server 'docs' must be a JSON object"),
        (json.dumps({"servers": {"docs": {**GOOD, "required": "yes please"}}}), "server 'docs': 'required'"),
    ],
)
def test_bad_configuration_is_a_configuration_error_naming_the_server_and_key(config, fragment):
    with pytest.raises(ConfigurationError) as raised:
        load_settings({"AGENT_MCP_SERVERS": config})
    assert fragment in raised.value.detail
    assert raised.value.status == 500


def test_a_good_configuration_parses_with_references_resolved():
    config = {
        "servers": {
            "docs": {
                "type": "http",
                "url": "https://tools.contoso.com/mcp",
                "headers": {"X-Api-Key": "${env:DOCS_KEY}", "X-Team": "agents"},
                "allowedTools": ["search"],
                "approval": {"always": ["delete page"], "never": ["search"]},
                "timeoutSeconds": 12.5,
                "required": True,
            },
            "me": {
                "url": "https://graph.contoso.com/mcp",
                "auth": {"type": "caller", "scope": "api://graph/.default"},
                "readOnly": True,
            },
            "local": {"url": "http://127.0.0.1:7072/mcp", "headers": {"X-Api-Key": "${env:DOCS_KEY}"}},
        }
    }
    environ = {"AGENT_MCP_SERVERS": json.dumps(config), "DOCS_KEY": "k-1", "AUTH_MODE": "easyauth"}
    settings = load_settings({**environ, "AUTH_CLIENT_ID": "app", "AUTH_TENANT_ID": "contoso"})
    docs, me, local = settings.mcp_servers
    assert local.headers == {"X-Api-Key": "k-1"}  # plain http:// to loopback crosses no network
    assert "k-1" not in repr(settings)  # resolved values never in a repr
    assert "k-1" not in repr(docs)
    assert me.auth.scope == "api://graph/.default"
    with pytest.raises(ConfigurationError, match=r"server 'me': 'auth' type 'caller' exchanges .* AUTH_CLIENT_ID"):
        load_settings(environ)
    assert (docs.name, docs.headers, docs.allowed_tools) == (
        "docs",
        {"X-Api-Key": "k-1", "X-Team": "agents"},
        ("search",),
    )
    assert (docs.timeout_seconds, docs.required, me.read_only, me.auth.type) == (12.5, True, True, "caller")
    assert docs.needs_approval("delete-page")
    assert not docs.needs_approval("search")
    assert docs.needs_approval("other")
    assert not me.needs_approval("anything")
    assert load_settings({}).mcp_servers == ()


async def test_bad_configuration_is_reported_on_first_use_as_problem_json(monkeypatch):
    monkeypatch.setenv("AGENT_MCP_SERVERS", json.dumps({"servers": {"docs": {"url": "nope"}}}))
    monkeypatch.setattr(runtime, "_service", None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        response = await client.post(TURN, json={"message": "hi"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "configuration_error"
    assert "server 'docs'" in response.json()["detail"]


# -- the sample ---------------------------------------------------------------------------------------------


@pytest.fixture
def sample_server():
    """``python -m samples.mcp_server`` on a free port, as the docs run it; yields its port."""
    import subprocess
    import sys

    from testkit.servers import ROOT, clean_env

    port = free_port()
    command = [sys.executable, "-m", "samples.mcp_server", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the sample MCP server did not start"
            assert process.poll() is None, "the sample MCP server exited"
            time.sleep(0.1)
    yield port
    process.terminate()
    process.wait(timeout=10)


async def test_the_sample_server_and_settings_run_the_documented_walkthrough(sample_server, backend_settings):
    from testkit.servers import ROOT

    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]["AGENT_MCP_SERVERS"]
    sample = sample.replace("127.0.0.1:7072", f"127.0.0.1:{sample_server}")
    servers_ = load_settings({"AGENT_MCP_SERVERS": sample}).mcp_servers
    service = runtime.build_service(backend_settings("memory", mcp_servers=servers_))  # the echo model
    async with await http(service) as client:
        call = 'call add_note {"title": "todo", "text": "ship it"}'
        asked = (await client.post("/api/sessions/n1/turns", json={"message": call})).json()
        (approval,) = asked["approvals"]
        assert approval["name"] == "add_note"
        answer = {"approvals": [{"id": approval["id"], "approved": True}]}
        done = (await client.post("/api/sessions/n1/turns", json=answer)).json()
        listed = (await client.post("/api/sessions/n1/turns", json={"message": "call list_notes {}"})).json()
    await runtime.install(None)
    assert done["reply"] == """[echo, offline] add_note returned: {"result": "Saved the note 'todo'."}"""
    assert listed["approvals"] == []  # read-only tools need no approval
    assert "todo" in listed["reply"]


async def test_what_the_process_holds_per_user_stays_bounded_however_many_users_come():
    issuer = TokenIssuer()
    scope = "api://mine/.default"
    with ToolServer("mine", {"add": add}, accept=lambda auth: bool(auth and auth.startswith("Bearer obo|"))) as srv:
        config = {"url": srv.url, "readOnly": True, "auth": {"type": "caller", "scope": scope}}
        pool = ToolServers(servers("easyauth", mine=config), exchange=issuer)
        users = MAX_CALLER_CONNECTIONS + 6
        for user in range(users):
            assert len(await pool.tools(owner=f"user-{user}", bearer=f"token-{user}")) == 1
        held = pool.held()
        srv.stop()  # now every new user's connection fails to open
        for user in range(users, 3 * users):
            assert await pool.tools(owner=f"user-{user}", bearer=f"token-{user}") == []
        after = pool.held()
        await pool.close()
    assert held == {
        "connections": MAX_CALLER_CONNECTIONS,
        "locks": MAX_CALLER_CONNECTIONS,
        "caller_tokens": MAX_CALLER_CONNECTIONS,
    }
    assert after["connections"] == after["locks"] == MAX_CALLER_CONNECTIONS  # failed users leave no lock
    assert after["caller_tokens"] <= MAX_CALLER_CONNECTIONS
    assert pool.held() == {"connections": 0, "locks": 0, "caller_tokens": 0}


async def test_the_on_behalf_of_exchange_asks_entra_as_the_app_registration_with_the_managed_identity(monkeypatch):
    """Entra cannot be reached here: the credential class azure-identity provides is replaced by one that records
    how it was made and what it was asked for."""
    from azure.identity import aio as identity_aio

    from stateful_agent.platform.obo import FEDERATION_SCOPE, OnBehalfOf

    made: list[dict] = []

    class RecordingOnBehalfOf:
        def __init__(self, tenant_id, client_id, **kwargs):
            self.call = {"tenant_id": tenant_id, "client_id": client_id, **kwargs}
            made.append(self.call)

        async def __aenter__(self):
            return self

        async def __aexit__(self, *_):
            self.call["closed"] = True

        async def get_token(self, *scopes):
            self.call["scopes"] = scopes
            return Token(f"downstream-for-{self.call['user_assertion']}", int(time.time()) + 3600)

    monkeypatch.setattr(identity_aio, "OnBehalfOfCredential", RecordingOnBehalfOf)
    identity = CountingCredential(lifetime=3600)
    keyless = OnBehalfOf("contoso", "app-id", identity=identity)
    token = await keyless.exchange("inbound-token", "api://mine/.default")
    assert token.token == "downstream-for-inbound-token"
    (call,) = made
    assert (call["tenant_id"], call["client_id"], call["user_assertion"]) == ("contoso", "app-id", "inbound-token")
    assert call["scopes"] == ("api://mine/.default",)
    assert call["client_assertion_func"]() == "mi-token-1"  # the managed identity's token is the client assertion
    assert identity.scopes == [(FEDERATION_SCOPE,)]
    assert "client_secret" not in call
    assert call["closed"]
    await keyless.close()
    assert not identity.closed  # injected: its owner closes it

    local = OnBehalfOf("contoso", "app-id", client_secret="s3cret")
    await local.exchange("inbound-token", "api://mine/.default")
    assert made[-1]["client_secret"] == "s3cret"
    assert "client_assertion_func" not in made[-1]
    assert "s3cret" not in repr(local)
