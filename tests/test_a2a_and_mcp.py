"""Other agents call ours: the A2A endpoint with the official ``a2a-sdk`` client and the MCP endpoint with the
official ``mcp`` client, over a real socket (the local host in a new process; restarts are real)."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.client.card_resolver import parse_agent_card
from a2a.types import a2a_pb2 as pb
from google.protobuf import json_format
from mcp import Client

from testkit.support import devhost

TOOLS = "tests.tools_for_tests:TOOLS"


def settings_file(tmp_path: Path, **values: str) -> Path:
    path = tmp_path / "local.settings.json"
    base = {"MAF_SESSION_BACKEND": "file", "MAF_SESSION_DIR": str(tmp_path / "sessions"), "AGENT_TOOLS": TOOLS}
    path.write_text(json.dumps({"Values": {**base, **values}}))
    return path


def message(text: str | None = None, *, context: str | None = None, task: str | None = None, approvals=None):
    parts = [pb.Part(text=text)] if text else []
    if approvals is not None:
        parts.append(json_format.ParseDict({"data": {"approvals": approvals}}, pb.Part()))
    sent = pb.Message(message_id=str(uuid.uuid4()), role=pb.ROLE_USER, parts=parts)
    if context:
        sent.context_id = context
    if task:
        sent.task_id = task
    return pb.SendMessageRequest(message=sent)


async def a2a_client(base: str, *, streaming: bool = False, headers: dict[str, str] | None = None):
    config = ClientConfig(streaming=streaming, httpx_client=httpx.AsyncClient(headers=headers or {}, timeout=30))
    return await create_client(f"{base}/api", client_config=config)


async def last(client, request) -> dict:
    events = [json_format.MessageToDict(event) async for event in client.send_message(request)]
    return events[-1]


async def fetch(url: str, method: str = "GET", **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(method, url, **kwargs)


def rpc(base: str, method: str, params, *, request_id=1, headers=None) -> dict:
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    return httpx.post(f"{base}/api/a2a", json=body, headers=headers or {}).json()


# -- A2A --------------------------------------------------------------------------------------------------------


def test_the_agent_card_is_spec_compliant_and_matches_the_auth_mode(tmp_path):
    with devhost(settings_file(tmp_path)) as base:
        card = httpx.get(f"{base}/api/.well-known/agent-card.json").json()
    parsed = parse_agent_card(dict(card))  # the SDK's own parsing (protobuf, unknown fields ignored)
    assert json_format.MessageToDict(parsed) == card  # nothing it had to drop or translate
    assert parsed.supported_interfaces[0].url == f"{base}/api/a2a"
    assert parsed.supported_interfaces[0].protocol_binding == "JSONRPC"
    assert parsed.supported_interfaces[0].protocol_version == "1.0"
    assert parsed.capabilities.streaming
    assert parsed.security_schemes["functionKey"].api_key_security_scheme.name == "x-functions-key"

    with devhost(settings_file(tmp_path, AUTH_MODE="easyauth", EASYAUTH_LOCAL_HEADERS="true")) as base:
        card = httpx.get(f"{base}/api/.well-known/agent-card.json").json()  # public: no principal needed
    assert card["securitySchemes"]["entra"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
    assert card["securityRequirements"] == [{"schemes": {"entra": {}}}]


async def test_the_sdk_resolves_the_card_and_connects_without_a_warning(tmp_path, caplog, recwarn):
    with devhost(settings_file(tmp_path)) as base, caplog.at_level(logging.WARNING):
        client = await a2a_client(base)
        await client.close()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("a2a")] == []
    assert [str(w.message) for w in recwarn if "a2a" in str(w.filename)] == []


async def test_send_stream_and_get_a_task_from_a_restarted_app(tmp_path):
    settings = settings_file(tmp_path)
    with devhost(settings) as base:
        client = await a2a_client(base)
        sent = (await last(client, message("Remember: lantern.", context="ctx-1")))["task"]
        await client.close()
        streaming = await a2a_client(base, streaming=True)
        events = [
            json_format.MessageToDict(e) async for e in streaming.send_message(message("Again.", context="ctx-1"))
        ]
        await streaming.close()
    assert sent["contextId"] == "ctx-1"
    assert sent["status"]["state"] == "TASK_STATE_COMPLETED"
    assert "I see 0 earlier message(s)" in sent["artifacts"][0]["parts"][0]["text"]
    assert events[0]["task"]["status"]["state"] == "TASK_STATE_WORKING"
    streamed = "".join(e["artifactUpdate"]["artifact"]["parts"][0]["text"] for e in events if "artifactUpdate" in e)
    assert "I see 2 earlier message(s)" in streamed
    assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"

    with devhost(settings) as base:  # a new process: the task comes from the stored session
        client = await a2a_client(base)
        task = json_format.MessageToDict(await client.get_task(pb.GetTaskRequest(id=sent["id"])))
        await client.close()
        session = (await fetch(f"{base}/api/sessions/ctx-1")).json()
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    assert task["artifacts"] == sent["artifacts"]
    assert session["turns"] == 2  # the same session the REST API shows


async def test_an_approval_round_trip_across_a_restart_runs_the_tool_once(tmp_path):
    log = tmp_path / "tool.log"
    settings = settings_file(tmp_path, TOOL_LOG=str(log))
    with devhost(settings) as base:
        client = await a2a_client(base)
        task = (await last(client, message('call transfer {"amount": 4, "to": "eve"}', context="pay")))["task"]
        await client.close()
    assert task["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
    (pending,) = task["status"]["message"]["parts"][1]["data"]["pendingApprovals"]
    assert (pending["name"], pending["arguments"]) == ("transfer", {"amount": 4, "to": "eve"})
    assert not log.exists()
    answer = [{"id": pending["id"], "approved": True}]
    with devhost(settings) as base:
        client = await a2a_client(base)
        waiting = json_format.MessageToDict(await client.get_task(pb.GetTaskRequest(id=task["id"])))
        assert waiting["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
        done = (await last(client, message(task=task["id"], approvals=answer)))["task"]
        again = rpc(
            base,
            "SendMessage",
            {"message": json_format.MessageToDict(message(task=task["id"], approvals=answer).message)},
        )
        finished = json_format.MessageToDict(await client.get_task(pb.GetTaskRequest(id=task["id"])))
        await client.close()
    assert done["id"] == task["id"]  # the answer continues the same task
    assert done["status"]["state"] == "TASK_STATE_COMPLETED"
    assert "transferred 4 to eve" in done["artifacts"][0]["parts"][0]["text"]
    assert again["error"]["code"] == -32602
    assert again["error"]["data"]["code"] == "approval_not_pending"
    assert finished["status"]["state"] == "TASK_STATE_COMPLETED"
    assert len(log.read_text().splitlines()) == 1


async def test_two_users_are_isolated_and_an_unauthenticated_call_is_refused(tmp_path):
    with devhost(settings_file(tmp_path, AUTH_MODE="easyauth", EASYAUTH_LOCAL_HEADERS="true")) as base:
        alice = await a2a_client(
            base, headers={"X-MS-CLIENT-PRINCIPAL-ID": "alice", "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}
        )
        bob = await a2a_client(base, headers={"X-MS-CLIENT-PRINCIPAL-ID": "bob", "X-MS-CLIENT-PRINCIPAL-IDP": "aad"})
        theirs = (await last(bob, message("bob here", context="shared")))["task"]
        mine = (await last(alice, message("alice's secret", context="shared")))["task"]
        assert mine["id"].rsplit(".", 1)[0] == theirs["id"].rsplit(".", 1)[0]  # the same session name and turn
        with pytest.raises(Exception, match=r"(?i)task"):
            await bob.get_task(pb.GetTaskRequest(id=mine["id"]))
        await alice.close()
        await bob.close()
        body = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {}}
        refused = await fetch(f"{base}/api/a2a", "POST", json=body)
    assert "I see 0 earlier message(s)" in theirs["artifacts"][0]["parts"][0]["text"]  # bob's own "shared"
    assert refused.status_code == 401
    assert refused.json()["error"]["data"]["code"] == "unauthenticated"


def test_json_rpc_errors_have_the_specified_codes_and_never_a_5xx(tmp_path):
    with devhost(settings_file(tmp_path)) as base:
        hello = {"messageId": "m0", "role": "ROLE_USER", "parts": [{"text": "hello"}]}
        done = rpc(base, "SendMessage", {"message": hello})["result"]["task"]
        broken = httpx.post(f"{base}/api/a2a", content=b"{not json", headers={"Content-Type": "application/json"})
        results = {
            "parse": broken,
            "not rpc": httpx.post(f"{base}/api/a2a", json={"hello": 1}),
            "unknown method": rpc(base, "tasks/explode", {}),
            "no params": rpc(base, "SendMessage", None),
            "no parts": rpc(base, "SendMessage", {"message": {"messageId": "m1", "role": "ROLE_USER", "parts": []}}),
            "file part": rpc(
                base, "SendMessage", {"message": {"messageId": "m2", "role": "ROLE_USER", "parts": [{"url": "x"}]}}
            ),
            "unknown task": rpc(base, "GetTask", {"id": "task-nope"}),
            "cancel": rpc(base, "CancelTask", {"id": done["id"]}),
            "bad context": rpc(
                base,
                "SendMessage",
                {"message": {"messageId": "m3", "role": "ROLE_USER", "parts": [{"text": "x"}], "contextId": "bad id!"}},
            ),
        }
    assert broken.status_code == 200
    codes = {name: (r.json() if isinstance(r, httpx.Response) else r)["error"]["code"] for name, r in results.items()}
    assert codes == {
        "parse": -32700,
        "not rpc": -32600,
        "unknown method": -32601,
        "no params": -32602,
        "no parts": -32602,
        "file part": -32005,
        "unknown task": -32001,
        "cancel": -32002,
        "bad context": -32602,
    }


def test_the_0_3_method_names_and_shapes_work_for_older_clients(tmp_path):
    with devhost(settings_file(tmp_path)) as base:
        sent = rpc(
            base,
            "message/send",
            {
                "message": {
                    "kind": "message",
                    "messageId": "old-1",
                    "role": "user",
                    "parts": [{"kind": "text", "text": "hi from 0.3"}],
                    "contextId": "old",
                }
            },
        )["result"]
        got = rpc(base, "tasks/get", {"id": sent["id"]})["result"]
        replayed = rpc(
            base,
            "message/send",
            {
                "message": {
                    "messageId": "old-1",
                    "role": "user",
                    "parts": [{"kind": "text", "text": "hi from 0.3"}],
                    "contextId": "old",
                }
            },
        )["result"]
        turns = httpx.get(f"{base}/api/sessions/old").json()["turns"]
        with httpx.stream(
            "POST",
            f"{base}/api/a2a",
            json={
                "jsonrpc": "2.0",
                "id": 7,
                "method": "message/stream",
                "params": {
                    "message": {
                        "messageId": "old-2",
                        "role": "user",
                        "parts": [{"kind": "text", "text": "more"}],
                        "contextId": "old",
                    }
                },
            },
        ) as response:
            frames = [json.loads(line[6:])["result"] for line in response.iter_lines() if line.startswith("data: ")]
    assert (sent["kind"], sent["status"]["state"]) == ("task", "completed")
    assert sent["artifacts"][0]["parts"][0] == {"kind": "text", "text": sent["artifacts"][0]["parts"][0]["text"]}
    assert got["id"] == sent["id"]
    assert got["status"]["state"] == "completed"
    assert replayed["id"] == sent["id"]  # the same messageId is the same turn: never run twice
    assert turns == 1
    assert frames[0]["kind"] == "task"
    assert frames[-1]["kind"] == "status-update"
    assert frames[-1]["final"] is True
    assert frames[-1]["status"]["state"] == "completed"
    assert any(f["kind"] == "artifact-update" for f in frames)


async def test_a_resent_streaming_message_replays_its_reply_without_running_again(tmp_path):
    with devhost(settings_file(tmp_path)) as base:
        client = await a2a_client(base, streaming=True)
        sent = message("only once", context="replay")
        first = [json_format.MessageToDict(e) async for e in client.send_message(sent)]
        again = [json_format.MessageToDict(e) async for e in client.send_message(sent)]  # the same messageId
        await client.close()
        turns = (await fetch(f"{base}/api/sessions/replay")).json()["turns"]

    def text(events):
        return "".join(e["artifactUpdate"]["artifact"]["parts"][0]["text"] for e in events if "artifactUpdate" in e)

    assert text(again) == text(first)
    assert "I see 0 earlier message(s)" in text(again)
    assert again[0]["task"]["id"] == first[0]["task"]["id"]
    assert turns == 1


# -- MCP --------------------------------------------------------------------------------------------------------


async def test_the_mcp_endpoint_asks_twice_across_a_restart_and_round_trips_an_approval(tmp_path):
    log = tmp_path / "tool.log"
    settings = settings_file(tmp_path, TOOL_LOG=str(log))
    with devhost(settings) as base:
        async with Client(f"{base}/api/mcp") as client:
            tools = (await client.list_tools()).tools
            first = await client.call_tool("ask", {"message": "Remember: lantern.", "conversation": "notes"})
    assert [tool.name for tool in tools] == ["ask"]
    assert set(tools[0].input_schema["properties"]) == {"message", "conversation", "approvals"}
    assert "I see 0 earlier message(s)" in first.content[0].text
    with devhost(settings) as base:
        async with Client(f"{base}/api/mcp") as client:
            second = await client.call_tool("ask", {"message": "And now?", "conversation": "notes"})
            asked = await client.call_tool(
                "ask", {"message": 'call transfer {"amount": 2, "to": "al"}', "conversation": "notes"}
            )
            (pending,) = asked.structured_content["pending_approvals"]
            answer = {"approvals": [{"id": pending["id"], "approved": True}], "conversation": "notes"}
            done = await client.call_tool("ask", answer)
            repeated = await client.call_tool("ask", answer)
            bad = await client.call_tool("ask", {"conversation": "notes"})
        session = (await fetch(f"{base}/api/sessions/mcp-notes")).json()
    assert "I see 2 earlier message(s)" in second.content[0].text
    assert "waiting for approval" in asked.content[0].text
    assert pending["id"] in asked.content[0].text
    assert "transferred 2 to al" in done.content[0].text
    assert repeated.is_error
    assert "approval_not_pending" in repeated.content[0].text
    assert bad.is_error
    assert len(log.read_text().splitlines()) == 1
    assert session["turns"] == 4


async def test_the_mcp_endpoint_refuses_the_unauthenticated_and_keeps_callers_apart(tmp_path):
    with devhost(settings_file(tmp_path, AUTH_MODE="easyauth", EASYAUTH_LOCAL_HEADERS="true")) as base:
        refused = await fetch(
            f"{base}/api/mcp",
            "POST",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
            headers={"Accept": "application/json, text/event-stream"},
        )
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        async def ask(user: str, text: str) -> str:
            headers = {"X-MS-CLIENT-PRINCIPAL-ID": user, "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}
            async with httpx2.AsyncClient(headers=headers) as http:
                transport = streamable_http_client(f"{base}/api/mcp", http_client=http)
                async with Client(transport) as client:
                    result = await client.call_tool("ask", {"message": text, "conversation": "same"})
            return result.content[0].text

        alice = await ask("alice", "alice's secret")
        bob = await ask("bob", "bob here")
    assert refused.status_code == 401
    assert "I see 0 earlier message(s)" in alice
    assert "I see 0 earlier message(s)" in bob
    assert "alice" not in bob


# -- the documented examples ------------------------------------------------------------------------------------


async def test_the_a2a_sample_client_converses_and_answers_an_approval(tmp_path):
    from samples.a2a_client import converse

    log = tmp_path / "tool.log"
    with devhost(settings_file(tmp_path, TOOL_LOG=str(log))) as base:
        hello = await converse(f"{base}/api", "hello", "sample", None)
        asked = []
        paid = await converse(
            f"{base}/api", 'call transfer {"amount": 1, "to": "zed"}', "sample", None, lambda q: asked.append(q) or "y"
        )
    assert "I see 0 earlier message(s)" in hello
    assert "transferred 1 to zed" in paid
    assert len(asked) == 1
    assert "transfer" in asked[0]
    assert len(log.read_text().splitlines()) == 1


SAMPLE_MCP_CONFIG = json.loads((Path(__file__).parent.parent / "samples" / "mcp.json").read_text())


async def test_the_sample_mcp_client_configuration_reaches_the_endpoint(tmp_path):
    config = SAMPLE_MCP_CONFIG
    local = config["servers"]["stateful-agent"]
    assert local["type"] == "http"
    with devhost(settings_file(tmp_path)) as base:
        url = local["url"].replace("http://127.0.0.1:7071", base)
        async with Client(url) as client:
            result = await client.call_tool("ask", {"message": "hi"})
    assert "I see 0 earlier message(s)" in result.content[0].text


def test_function_key_holders_get_conversations_of_their_own():
    from stateful_agent.http.mcp_endpoint import session_for

    assert session_for("notes", None) == "mcp-notes"
    assert session_for("notes", "key-a") != session_for("notes", "key-b")
    assert session_for("notes", "key-a") == session_for("notes", "key-a")
    assert "key-a" not in session_for("notes", "key-a")
