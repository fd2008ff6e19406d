"""The local host over a real socket: the README's conversation that survives a restart."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from testkit.servers import clean_env
from testkit.support import devhost
from tests.conftest import ROOT


def test_conversation_survives_a_restart_of_the_local_host(tmp_path):
    settings_file = tmp_path / "local.settings.json"
    values = {"MAF_SESSION_BACKEND": "file", "MAF_SESSION_DIR": str(tmp_path / "sessions")}
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}))

    with devhost(settings_file) as base:
        assert httpx.get(f"{base}/api/health").json() == {"status": "ok"}  # anonymous: nothing more
        me = httpx.get(f"{base}/api/me").json()
        assert (me["backend"], me["model"]) == ("file", "echo (offline, no model configured)")
        first = httpx.post(f"{base}/api/sessions/demo/turns", json={"message": "My name is Ada."})
        assert first.status_code == 200
        assert first.json()["turn"] == 1
        bad = httpx.post(f"{base}/api/sessions/a%2Fb/turns", json={"message": "hi"})
        assert bad.status_code == 400
        assert bad.json()["code"] == "invalid_session_id"
        missing = httpx.get(f"{base}/api/nothing-here")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"

    with devhost(settings_file) as base:  # a brand-new process
        second = httpx.post(f"{base}/api/sessions/demo/turns", json={"message": "What is my name?"})
        assert second.status_code == 200
        assert second.json()["turn"] == 2
        assert 'first message was: "My name is Ada."' in second.json()["reply"]
        assert "I see 2 earlier message(s)" in second.json()["reply"]
        assert httpx.get(f"{base}/api/sessions/demo").json()["turns"] == 2


def _refused(*args: str) -> subprocess.CompletedProcess:
    """Start the local host with ``args``, expecting it to stop at once."""
    return subprocess.run(
        [sys.executable, "-m", "stateful_agent.devhost", "--port", "1", *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_settings_stop_the_local_host_with_a_clear_message(tmp_path):
    settings_file = tmp_path / "local.settings.json"
    settings_file.write_text(json.dumps({"Values": {"MAF_SESSION_BACKEND": "cosmos"}}))
    completed = _refused("--settings-file", str(settings_file))
    assert completed.returncode == 2
    assert "COSMOS_ENDPOINT is required" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_the_local_host_can_act_as_a_named_user(tmp_path):
    """``--user`` turns on per-user sessions locally; explicit identity headers still win."""
    settings_file = tmp_path / "local.settings.json"
    values = {"MAF_SESSION_BACKEND": "file", "MAF_SESSION_DIR": str(tmp_path / "sessions")}
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    bob = {"X-MS-CLIENT-PRINCIPAL-ID": "bob", "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}

    with devhost(settings_file, "--user", "alice") as base:
        assert httpx.post(f"{base}/api/sessions/demo/turns", json={"message": "I am Alice."}).status_code == 200
        assert httpx.get(f"{base}/api/sessions/demo", headers=bob).status_code == 404
        assert (
            httpx.post(f"{base}/api/sessions/demo/turns", json={"message": "I am Bob."}, headers=bob).json()["turn"]
            == 1
        )
        alice = httpx.get(f"{base}/api/sessions").json()["sessions"]
        assert [(s["session_id"], s["title"]) for s in alice] == [("demo", "I am Alice.")]

    with devhost(settings_file) as base:  # without --user (AUTH_MODE=none) neither user's session shows
        assert httpx.get(f"{base}/api/sessions").json() == {"sessions": [], "next_cursor": None}


def test_an_invalid_user_name_is_refused():
    completed = _refused("--user", "not ok!", "--settings-file", "")
    assert completed.returncode == 2
    assert "--user takes" in completed.stderr


def test_the_readme_walkthrough_approves_a_tool_call_across_a_restart(tmp_path):
    """The README's walkthrough: the echo model asks for the sample payment tool, the app restarts, the
    approval is answered in the new process, and the tool runs there."""
    settings_file = tmp_path / "local.settings.json"
    values = {
        "MAF_SESSION_BACKEND": "file",
        "MAF_SESSION_DIR": str(tmp_path / "sessions"),
        "AGENT_TOOLS": "samples.tools:TOOLS",
    }
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    message = {"message": 'call send_payment {"amount_eur": 12.5, "to": "Ada"}'}

    with devhost(settings_file) as base:
        asked = httpx.post(f"{base}/api/sessions/pay/turns", json=message).json()
        (approval,) = asked["approvals"]
        assert (approval["name"], approval["arguments"]) == ("send_payment", {"amount_eur": 12.5, "to": "Ada"})
        assert asked["usage"]["total_tokens"] > 0

    with devhost(settings_file) as base:  # a brand-new process
        assert httpx.get(f"{base}/api/sessions/pay").json()["pending_approvals"] == [approval]
        answer = {"approvals": [{"id": approval["id"], "approved": True}]}
        done = httpx.post(f"{base}/api/sessions/pay/turns", json=answer).json()
        assert (
            done["reply"]
            == "[echo, offline] send_payment returned: Sent 12.50 EUR to Ada (sample tool: no money moved)."
        )
        assert done["approvals"] == []
        session = httpx.get(f"{base}/api/sessions/pay").json()
        assert session["pending_approvals"] == []
        assert session["usage"]["total_tokens"] > asked["usage"]["total_tokens"]


def test_run_local_turns_the_sample_tools_on_unless_a_setting_names_tools_and_prints_the_page(tmp_path):
    """``./scripts/run-local`` passes ``--tools samples.tools:TOOLS``: a newcomer can make the echo model call
    a tool from the chat page whose URL it prints; an ``AGENT_TOOLS`` setting (even blank) wins."""
    settings_file = tmp_path / "local.settings.json"
    values = {"MAF_SESSION_BACKEND": "file", "MAF_SESSION_DIR": str(tmp_path / "sessions")}
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    message = {"message": 'call get_weather {"city": "Oslo"}'}
    output: list[str] = []
    with devhost(settings_file, "--tools", "samples.tools:TOOLS", output=output) as base:
        reply = httpx.post(f"{base}/api/sessions/w/turns", json=message).json()["reply"]
        assert reply == "[echo, offline] get_weather returned: Oslo: cloudy, 14 °C"
        assert httpx.get(f"{base}/api/ui").status_code == 200
    assert f"Chat page: {base}/api/ui" in output[0]

    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": {**values, "AGENT_TOOLS": ""}}))
    with devhost(settings_file, "--tools", "samples.tools:TOOLS") as base:
        reply = httpx.post(f"{base}/api/sessions/x/turns", json=message).json()["reply"]
        assert reply.startswith('[echo, offline] You said: "call get_weather')


def test_garbage_collection_waits_for_the_first_request_then_skips_startup_objects():
    """A cold start allocates much and frees little: GC is off while the app imports and serves its first
    request, then what startup allocated is frozen out of later collections, and GC runs again."""
    script = (
        "import asyncio, gc, json, httpx\n"
        "import function_app\n"
        "from stateful_agent.devhost import build_app\n"
        "before = gc.isenabled()\n"
        "async def main():\n"
        "    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url='http://t') as c:\n"
        "        return (await c.get('/api/health')).status_code\n"
        "status = asyncio.run(main())\n"
        "print(json.dumps([before, status, gc.isenabled(), gc.get_freeze_count() > 0]))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=clean_env(MAF_SESSION_BACKEND="memory"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == [False, 200, True, True]


def test_every_function_is_served_by_its_handler_with_the_route_it_is_registered_on():
    import function_app
    from stateful_agent.devhost import http_functions
    from stateful_agent.http import a2a_endpoint, mcp_endpoint, routes
    from stateful_agent.http.responses_api import routes as responses

    pairs = http_functions(function_app.app)
    assert len(pairs) == 23
    handlers = {
        **vars(routes),
        **vars(responses),
        "list_conversation_items": responses.list_items,
        "add_conversation_items": responses.add_items,
        "get_conversation_item": responses.get_item,
        "mcp": mcp_endpoint.mcp,
        "agent_card": a2a_endpoint.card,
        "a2a": a2a_endpoint.a2a,
    }
    for function, trigger in pairs:
        handler = handlers[function.get_function_name()]
        methods = [str(getattr(method, "value", method)).upper() for method in trigger.methods]
        assert handler.served == (methods[0], trigger.route), function.get_function_name()
        assert len(methods) == 1


def test_the_route_prefix_comes_from_host_json(tmp_path):
    from stateful_agent.platform.settings import route_prefix

    assert route_prefix() == json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"]
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": "/agent/"}}}))
    assert route_prefix(tmp_path / "host.json") == "agent"
    (tmp_path / "empty.json").write_text("{}")
    assert route_prefix(tmp_path / "empty.json") == "api"
    (tmp_path / "none.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": ""}}}))
    assert route_prefix(tmp_path / "none.json") == ""
