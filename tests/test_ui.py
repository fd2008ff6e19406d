"""The chat page in a real headless Chromium (Debian's ``chromium``, driven by Playwright), against the local
host on a real socket, with the scripted model. Each test leaves a screenshot in ``test-artifacts/ui/``."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import replace
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from stateful_agent.http.chat_page import ASSETS
from stateful_agent.platform.models import build_chat_client
from testkit.openai_server import Call, Calls, Reply, chat_completions_server
from testkit.servers import free_port
from testkit.support import CallTool, ScriptedChatClient, service_for, settings_for
from tests import tools_for_tests
from tests.conftest import ROOT

playwright = pytest.importorskip("playwright.sync_api")

ARTIFACTS = ROOT / "test-artifacts" / "ui"
TOOLS = "tests.tools_for_tests:TOOLS"
#: Flags for a root user in a container with a closed network (the browser must not try to phone home).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def chromium_path() -> str | None:
    return next((p for p in (os.environ.get("CHROMIUM_PATH"), shutil.which("chromium")) if p), None)


class LiveServer:
    """The local host (``devhost.build_app``) served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve()

    def __enter__(self) -> LiveServer:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the local host did not start")
            threading.Event().wait(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coroutine`` on the server's event loop (where the service lives); return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def set(self, event: asyncio.Event) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(event.set)


class RequireKey:
    """What the Functions host does with AUTH_MODE=none: API routes but the page need ``x-functions-key``
    (an empty 401 otherwise). Records the keys it saw."""

    def __init__(self, app: Any, key: str) -> None:
        self.app, self.key, self.seen = app, key.encode(), []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/") and scope["path"] != "/api/ui":
            given = dict(scope["headers"]).get(b"x-functions-key")
            self.seen.append((scope["path"], scope.get("query_string", b""), given))
            if given != self.key:
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("browser tests must run in CI: no chromium (apt-get install chromium)", pytrace=False)
        pytest.skip("no chromium (apt-get install chromium, or set CHROMIUM_PATH)")
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def app_for(tmp_path: Path) -> Iterator[Any]:
    """Factory: serve a service (file store, scripted ``model``) on a live local host; yield ``(server, service)``."""
    servers: list[LiveServer] = []

    def make(
        model: ScriptedChatClient | None, *, wrap: Any = None, user: str | None = None, **settings: Any
    ) -> tuple[LiveServer, Any]:
        """``model=None``: the app's own offline echo model; ``user``: the local host acts as that user."""
        configured = settings_for("file", tmp_path=tmp_path, **settings)
        service = service_for(configured, model or build_chat_client(configured))
        app = build_app(user=user)
        server = LiveServer(wrap(app) if wrap else app).__enter__()
        servers.append(server)
        server.run(runtime.install(service))
        return server, service

    yield make
    for server in servers:
        server.run(runtime.install(None))
        server.__exit__()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser tab; a screenshot of it is saved when the test ends, passed or failed."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.errors = errors
    yield tab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def send(page: Any, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def replies(page: Any) -> Any:
    return page.locator(".msg.assistant:not(.streaming)")


@pytest.fixture(autouse=True)
def _no_runs_yet():
    tools_for_tests.RUNS.clear()


# -- conversations --------------------------------------------------------------------------------------------


def test_a_streamed_two_turn_conversation_is_still_there_after_a_reload(app_for, page):
    pause = asyncio.Event()
    server, _ = app_for(ScriptedChatClient(["Hello there, my friend", "A second reply"], pause=pause, usage=(7, 2)))
    page.goto(f"{server.url}/api/ui")
    send(page, "My name is Ada.")

    streaming = page.locator(".msg.assistant.streaming")
    streaming.wait_for()
    assert streaming.inner_text() == "Hello"  # the first delta shows while the model still works
    server.set(pause)
    replies(page).first.wait_for()
    assert replies(page).first.inner_text().startswith("Hello there, my friend")
    assert "7 tokens in · 2 out" in replies(page).first.inner_text()

    page.type("#input", "What is")
    page.press("#input", "Shift+Enter")  # a new line, not a send
    page.type("#input", "my name?")
    assert page.locator(".msg.user").count() == 1
    page.press("#input", "Enter")
    replies(page).nth(1).wait_for()
    page.reload()
    replies(page).nth(1).wait_for()
    assert page.locator(".msg.user").all_inner_texts() == ["My name is Ada.", "What is\nmy name?"]
    assert page.locator("#sessions button").all_inner_texts() == ["My name is Ada."]
    assert page.errors == []


def test_a_second_conversation_is_listed_newest_first_and_the_first_reopens(app_for, page):
    server, _ = app_for(ScriptedChatClient(["first answer", "second answer"]))
    page.goto(f"{server.url}/api/ui")
    send(page, "The first conversation")
    replies(page).first.wait_for()
    page.click("text=New conversation")
    send(page, "The second conversation")
    page.locator(".msg.assistant:has-text('second answer')").wait_for()
    page.locator("#sessions button").nth(1).wait_for()
    assert page.locator("#sessions button").all_inner_texts() == ["The second conversation", "The first conversation"]

    page.click("#sessions button >> text=The first conversation")
    page.locator(".msg.assistant:has-text('first answer')").wait_for()
    assert page.locator(".msg.user").all_inner_texts() == ["The first conversation"]
    assert page.get_attribute("#sessions button >> nth=1", "aria-current") == "true"


def test_deleting_asks_first_and_removes_the_conversation(app_for, page):
    server, service = app_for(ScriptedChatClient(["kept"]))
    page.goto(f"{server.url}/api/ui")
    send(page, "Delete me")
    replies(page).first.wait_for()
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#delete")
    assert page.locator("#sessions button").count() == 1  # dismissed: nothing deleted
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete")
    page.locator("#sessions button").first.wait_for(state="detached")
    assert server.run(service.store.list_sessions("", limit=5)) == []


# -- tools and approvals ----------------------------------------------------------------------------------------


def test_a_tool_call_is_shown_and_an_approval_clicked_runs_the_tool_once(app_for, page):
    script = [
        CallTool("lookup", {"item": "answer"}),
        "The answer is 42.",
        CallTool("transfer", {"amount": 5, "to": "bob"}, text="I will transfer."),
        "Done: transferred.",
    ]
    server, _ = app_for(ScriptedChatClient(script), agent_tools=TOOLS)
    page.goto(f"{server.url}/api/ui")
    send(page, "What is the answer?")
    page.locator(".msg.assistant:has-text('The answer is 42.')").wait_for()
    assert "lookup" in page.locator(".tool").first.inner_text()
    assert "answer: 42" in page.locator(".tool.result").first.inner_text()

    send(page, "Pay bob 5 euros")
    card = page.locator(".approval")
    card.wait_for()
    assert "transfer" in card.inner_text()
    assert tools_for_tests.RUNS == []  # not without a person's click
    page.click(".approval >> text=Approve")
    page.locator(".msg.assistant:has-text('Done: transferred.')").wait_for()
    assert "transferred 5 to bob" in page.locator(".tool.result").last.inner_text()
    assert tools_for_tests.RUNS == [(5, "bob")]

    page.reload()  # the whole story, from the transcript
    page.locator(".msg.assistant:has-text('Done: transferred.')").wait_for()
    assert page.locator(".approval").count() == 0
    assert "Tool call approved." in page.locator("#log").inner_text()


def test_calls_streamed_in_fragments_show_once_each_live_and_after_a_reload(app_for, page):
    """A model that streams as OpenAI does (parallel calls interleaved by index), then as llama.cpp does."""
    script = [
        Calls([Call("lookup", {"item": "Oslo"}), Call("lookup", {"item": "Bergen"})], interleave=True),
        Reply("Both are 42."),
        Calls([Call("transfer", {"amount": 5, "to": "bob"})], repeat_header=True),
        Reply("Done: transferred."),
    ]
    with chat_completions_server(script) as model:
        server, _ = app_for(
            None,
            agent_tools=TOOLS,
            model_provider="openai",
            openai_base_url=f"{model.url}/v1",
            openai_model="gpt-test",
            model_max_retries=0,
        )
        page.goto(f"{server.url}/api/ui")
        send(page, "Look up Oslo and Bergen")
        page.locator(".msg.assistant:has-text('Both are 42.')").wait_for()
        calls, results = page.locator(".tool:not(.result)"), page.locator(".tool.result")
        assert calls.count() == 2
        assert ['"item": "Oslo"' in calls.nth(0).inner_text(), '"item": "Bergen"' in calls.nth(1).inner_text()] == [
            True,
            True,
        ]
        assert results.all_inner_texts() == ["Result of lookup\nOslo: 42", "Result of lookup\nBergen: 42"]

        send(page, "Pay bob 5")
        page.click(".approval >> text=Approve")
        page.locator(".msg.assistant:has-text('Done: transferred.')").wait_for()
        assert calls.count() == 3
        assert results.last.inner_text() == "Result of transfer\ntransferred 5 to bob"

        page.reload()
        page.locator(".msg.assistant:has-text('Done: transferred.')").wait_for()
        assert calls.count() == 3
        assert results.count() == 3
        assert tools_for_tests.RUNS == [(5, "bob")]
        assert page.errors == []


def test_a_newcomer_with_the_echo_model_is_told_how_to_call_a_tool_and_approves_one(app_for, page):
    """What ``./scripts/run-local`` serves: the offline echo model and the sample tools."""
    server, _ = app_for(None, agent_tools="samples.tools:TOOLS")
    page.goto(f"{server.url}/api/ui")
    hint = page.locator(".notice:has-text('Offline echo model')")
    hint.wait_for()
    example = hint.locator("code").nth(1).inner_text()
    assert example.startswith("call send_payment")

    send(page, example)
    page.click(".approval >> text=Approve")
    result = "[echo, offline] send_payment returned: Sent 5.00 EUR to Ada (sample tool: no money moved)."
    page.locator(f".msg.assistant:has-text('{result}')").wait_for()
    page.reload()
    page.locator(f".msg.assistant:has-text('{result}')").wait_for()
    assert page.locator(".notice:has-text('Offline echo model')").count() == 0  # only on an empty conversation
    assert page.errors == []


def test_an_approval_whose_request_never_arrives_is_asked_again(app_for, page):
    script = [CallTool("transfer", {"amount": 7, "to": "eve"}), "Sent."]
    server, _ = app_for(ScriptedChatClient(script), agent_tools=TOOLS)
    page.goto(f"{server.url}/api/ui")
    send(page, "Pay eve 7")
    page.locator(".approval").wait_for()

    page.route("**/turns", lambda route: route.abort("connectionrefused"))  # the answer and its retry
    page.click(".approval >> text=Approve")
    page.locator(".problem:has-text('Network error')").wait_for()
    page.locator(".approval:not(.answered)").wait_for()  # the app still waits: asked again
    assert tools_for_tests.RUNS == []

    page.unroute("**/turns")
    page.click(".approval:not(.answered) >> text=Approve")
    page.locator(".msg.assistant:has-text('Sent.')").wait_for()
    assert tools_for_tests.RUNS == [(7, "eve")]


# -- safety and failures ----------------------------------------------------------------------------------------


def test_markup_in_a_reply_is_text_and_markdown_is_built_safely(app_for, page):
    reply = (
        "<script>document.title='pwned'</script> <img src=x onerror=alert(1)> **bold** `code` "
        "[site](https://example.com) [bad](javascript:alert(1))\n\n- one\n- two"
    )
    server, _ = app_for(ScriptedChatClient([reply]))
    page.goto(f"{server.url}/api/ui")
    send(page, "Say something nasty")
    answer = replies(page).first
    answer.wait_for()
    assert "<script>document.title='pwned'</script>" in answer.inner_text()
    assert "<img src=x onerror=alert(1)>" in answer.inner_text()
    assert page.locator("#log script, #log img").count() == 0
    assert page.title() == "Stateful agent"
    assert answer.locator("strong").inner_text() == "bold"
    assert answer.locator("code").inner_text() == "code"
    assert answer.locator("li").all_inner_texts() == ["one", "two"]
    (anchor,) = answer.locator("a").all()  # the javascript: link stays text
    assert anchor.get_attribute("href") == "https://example.com"
    assert anchor.get_attribute("rel") == "noopener noreferrer"


def test_a_conflict_is_explained_and_the_conversation_reloaded(app_for, page):
    gate = asyncio.Event()
    server, service = app_for(ScriptedChatClient(["first", "this reply loses the race"], gate=None))
    page.goto(f"{server.url}/api/ui")
    send(page, "Start")
    replies(page).first.wait_for()
    session_id = page.url.split("#session=")[1]

    service.agent.client.gate = gate  # the page's next turn waits at the model, after reading the session
    send(page, "From this tab")
    page.locator(".msg.user:has-text('From this tab')").wait_for()
    other = service_for(service.settings, ScriptedChatClient(["from another device"]))
    other.store = service.store
    server.run(_settled(service.agent.client, 2))
    server.run(other.run_turn(session_id, "Meanwhile, elsewhere"))
    server.set(gate)

    page.locator("text=changed elsewhere").wait_for()
    page.locator(".msg.assistant:has-text('from another device')").wait_for()
    assert page.locator(".msg.user").all_inner_texts() == ["Start", "Meanwhile, elsewhere"]
    assert page.input_value("#input") == "From this tab"  # not lost: ready to send again


async def _settled(model: ScriptedChatClient, requests: int) -> None:
    await asyncio.wait_for(model.wait_for_requests(requests), 10)


def test_a_lost_answer_is_retried_once_with_the_same_key_and_stored_once(app_for, page):
    server, service = app_for(ScriptedChatClient(["stored exactly once"]))
    keys: list[str] = []

    def lose_first_answer(route: Any) -> None:
        keys.append(route.request.headers.get("idempotency-key", ""))
        if len(keys) == 1:
            route.fetch()  # the turn runs and is stored; its answer never reaches the page
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/turns", lose_first_answer)
    page.goto(f"{server.url}/api/ui")
    send(page, "Only once, please")
    replies(page).first.wait_for()
    assert len(keys) == 2
    assert keys[0] == keys[1] != ""
    assert "retrying with the same Idempotency-Key" in page.locator("#log").inner_text()
    assert replies(page).count() == 1
    session_id = page.url.split("#session=")[1]
    described = server.run(service.describe(session_id))
    assert described["turns"] == 1


def test_a_problem_is_shown_with_its_title_and_detail(app_for, page):
    server, _ = app_for(ScriptedChatClient())
    page.goto(f"{server.url}/api/ui")
    send(page, "x" * 40_000)  # above MAX_MESSAGE_BYTES
    problem = page.locator(".problem")
    problem.wait_for()
    assert "Message too large" in problem.inner_text() or "too large" in problem.inner_text().lower()
    assert "message_too_large" in problem.inner_text()
    assert page.input_value("#input") == "x" * 40_000  # nothing stored: the text is back, to shorten and resend
    assert page.locator(".msg.user.unsent").inner_text().endswith("(not sent)")


# -- identity and settings -------------------------------------------------------------------------------------


def test_with_function_keys_the_page_asks_once_and_keeps_the_key_out_of_the_url(app_for, page):
    guard: list[RequireKey] = []

    def wrap(app: Any) -> RequireKey:
        guard.append(RequireKey(app, "the-key"))
        return guard[0]

    server, _ = app_for(ScriptedChatClient(["with a key"]), wrap=wrap)
    page.goto(f"{server.url}/api/ui")
    page.locator("#key-dialog").wait_for()
    page.fill("#key-input", "the-key")
    page.click("#key-form button")
    page.locator("text=Shared conversations").wait_for()
    send(page, "Hello")
    replies(page).first.wait_for()
    assert "the-key" not in page.url
    assert all(key == b"the-key" for _, query, key in guard[0].seen[-3:])
    assert all(b"the-key" not in query for _, query, _ in guard[0].seen)
    page.reload()  # the tab keeps it (session storage): no second question
    replies(page).first.wait_for()
    assert not page.locator("#key-dialog").is_visible()


def test_a_signed_in_user_sees_their_name_and_only_their_conversations(app_for, page):
    model = ScriptedChatClient(["for alice"])
    server, _ = app_for(model, user="alice@example.com", auth_mode="easyauth", easyauth_local_headers=True)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone-sized screen
    page.goto(f"{server.url}/api/ui")
    page.locator("text=Signed in as alice@example.com").wait_for()
    send(page, "Mine")
    replies(page).first.wait_for()
    box = page.locator("#sidebar").bounding_box()
    assert box["x"] + box["width"] <= 1  # the list folds away off-screen on a small screen
    page.click("#toggle")
    page.wait_for_timeout(300)  # the slide-in transition
    assert page.locator("#sidebar").bounding_box()["x"] >= 0
    assert page.get_attribute("#toggle", "aria-expanded") == "true"
    assert page.locator("#sessions button").all_inner_texts() == ["Mine"]
    assert httpx.get(f"{server.url}/api/sessions", headers=_bob()).json()["sessions"] == []


def _bob() -> dict[str, str]:
    return {"x-ms-client-principal-id": "bob", "x-ms-client-principal-idp": "aad"}


def test_the_page_sets_a_strict_policy_and_can_be_turned_off(app_for):
    server, service = app_for(ScriptedChatClient())
    response = httpx.get(f"{server.url}/api/ui")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'sha256-" in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert "connect-src 'self'" in policy
    assert "http" not in response.text.split("<script>")[0].lower().replace("http-equiv", "")  # no external loads

    service.settings = replace(service.settings, chat_ui=False)
    off = httpx.get(f"{server.url}/api/ui")
    assert off.status_code == 404
    assert off.json()["code"] == "chat_ui_disabled"


def test_the_deployment_package_carries_the_page():
    """``func azure functionapp publish`` and azd leave out what ``.funcignore`` names; the page's files stay."""
    ignored = [line.strip() for line in (ROOT / ".funcignore").read_text().splitlines() if line.strip()]
    assets = sorted(p.relative_to(ROOT) for p in ASSETS.iterdir())
    assert [a.name for a in assets] == ["chat.css", "chat.html", "chat.js"]
    for asset in assets:
        assert not any(fnmatch(part, pattern) for part in asset.parts for pattern in ignored), asset
