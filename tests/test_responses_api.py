"""The OpenAI Responses API, driven by the official ``openai`` client (sync and async) over a real socket:
the local host in a new process (restarts are real), or the app's service under uvicorn in this process."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import httpx2
import openai
import pytest
import uvicorn
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from testkit.servers import free_port
from testkit.support import CallTool, ModelDown, ScriptedChatClient, devhost
from tests.conftest import DURABLE_BACKENDS

TOOLS = "tests.tools_for_tests:TOOLS"
EVENTS = TypeAdapter(ResponseStreamEvent)


def settings_file(tmp_path: Path, **values: str) -> Path:
    path = tmp_path / "local.settings.json"
    base = {"MAF_SESSION_BACKEND": "file", "MAF_SESSION_DIR": str(tmp_path / "sessions"), "AGENT_TOOLS": TOOLS}
    path.write_text(json.dumps({"Values": {**base, **values}}))
    return path


def client_for(base: str, **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/api/v1", api_key="local", **options)


def counting(paths: list[str]) -> httpx2.Client:
    """An HTTP client for the openai client that records the path of every request it sends (retries too)."""
    transport = httpx2.HTTPTransport()

    class Counting(httpx2.BaseTransport):
        def handle_request(self, request):
            paths.append(request.url.path)
            return transport.handle_request(request)

    return httpx2.Client(transport=Counting())


def checked(response: Response) -> Response:
    """The response, validated against the openai package's own model (not only leniently parsed)."""
    Response.model_validate(response.model_dump(mode="json", exclude_unset=True))
    return response


class InProcessApp:
    """The app's real service (a scripted model) under uvicorn on a free port, in a thread of this process."""

    def __init__(self, service) -> None:
        self.service = service
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(build_app(), port=self.port, log_level="warning", lifespan="off"))

    def __enter__(self) -> InProcessApp:
        def serve() -> None:
            async def main() -> None:
                await runtime.install(self.service)
                await self.server.serve()

            asyncio.run(main())

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def app(make_service):
    """Serve a service built by ``make_service`` over a real socket: ``app(backend, model, **settings)``."""
    running = []

    def start(backend: str = "memory", model=None, **settings) -> InProcessApp:
        served = InProcessApp(make_service(backend, model, **settings)).__enter__()
        running.append(served)
        return served

    yield start
    for served in running:
        served.__exit__()


# -- conversations across restarts ------------------------------------------------------------------------------


def test_a_conversation_continues_across_a_restart_and_is_the_same_session_on_the_rest_api(tmp_path):
    settings = settings_file(tmp_path)
    with devhost(settings) as base:
        client = client_for(base)
        first = checked(client.responses.create(model="any-model", input="Remember the word lantern."))
        conversation = first.conversation.id
        assert first.model == "any-model"  # reported back; the deployment is the app's
        assert first.status == "completed"
        assert first.output_text.startswith("[echo, offline]")
    with devhost(settings) as base:  # a new process: nothing in memory
        client = client_for(base)
        second = checked(
            client.responses.create(model="any-model", input="What was the word?", conversation=conversation)
        )
        assert "I see 2 earlier message(s)" in second.output_text
        assert second.conversation.id == conversation
        session = httpx.get(f"{base}/api/sessions/{conversation}").json()
    assert session["turns"] == 2
    assert [m["text"] for m in session["messages"] if m["role"] == "user"] == [
        "Remember the word lantern.",
        "What was the word?",
    ]


def test_a_session_started_on_the_rest_api_continues_as_a_conversation(tmp_path):
    with devhost(settings_file(tmp_path)) as base:
        httpx.post(f"{base}/api/sessions/my-chat/turns", json={"message": "hello"}).raise_for_status()
        reply = client_for(base).responses.create(model="m", input="and again", conversation={"id": "my-chat"})
        items = list(client_for(base).conversations.items.list("my-chat", order="asc"))
    assert "I see 2 earlier message(s)" in reply.output_text
    assert next((i.type, i.role, i.content[0].text) for i in items) == ("message", "user", "hello")
    assert len(items) == 4


def test_a_chain_of_previous_response_ids_and_a_stale_link_is_a_conflict_the_client_does_not_retry(app):
    served = app("memory", ScriptedChatClient(["one", "two", "three"]))
    counted: list[str] = []
    client = client_for(served.base, http_client=counting(counted))
    first = checked(client.responses.create(model="m", input="a"))
    second = checked(client.responses.create(model="m", input="b", previous_response_id=first.id))
    assert second.previous_response_id == first.id
    assert second.conversation.id == first.conversation.id
    assert second.output_text == "two"
    counted.clear()
    with pytest.raises(openai.ConflictError) as conflict:
        client.responses.create(model="m", input="c", previous_response_id=first.id)
    assert counted == ["/api/v1/responses"]  # x-should-retry: false, though the client retries 409 by default
    assert conflict.value.code == "conversation_moved_on"
    assert conflict.value.response.headers["x-should-retry"] == "false"
    third = client.responses.create(model="m", input="c", previous_response_id=second.id)
    assert third.output_text == "three"


# -- streaming ---------------------------------------------------------------------------------------------------


def test_the_stream_helper_yields_the_reply_and_the_final_response(app):
    served = app("memory", ScriptedChatClient(["Hello there, friend."]))
    client = client_for(served.base)
    with client.responses.stream(model="m", input="hi") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "Hello there, friend."
    assert final.output_text == "Hello there, friend."
    assert final.status == "completed"
    assert checked(client.responses.retrieve(final.id)).output_text == "Hello there, friend."


def test_a_raw_stream_has_the_documented_event_sequence_with_sequence_numbers(app):
    model = ScriptedChatClient([CallTool("lookup", {"item": "x"}), "Found it."], usage=(5, 3))
    served = app("memory", model, agent_tools=TOOLS)
    events = list(client_for(served.base).responses.create(model="m", input="look", stream=True))
    for event in events:
        EVENTS.validate_python(event.model_dump(mode="json", exclude_unset=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events if e.type != "response.output_text.delta"]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",  # the tool call, open while it runs
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.output_item.done",
        "response.output_item.added",  # "Found it."
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1].response
    assert [item.type for item in final.output] == ["mcp_call", "message"]
    call = final.output[0]
    assert (call.name, json.loads(call.arguments), call.output) == ("lookup", {"item": "x"}, "x: 42")
    assert final.usage.total_tokens == 16
    assert not [item for item in final.output if item.type == "function_call"]  # never for the client to run


def test_a_model_failure_mid_stream_is_an_error_event_and_a_failed_response_and_nothing_is_stored(app):
    served = app("memory", ScriptedChatClient([ModelDown("the model is down")]))
    events = list(client_for(served.base).responses.create(model="m", input="hi", stream=True))
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-2].code == "model_error"
    assert events[-1].response.error.code == "model_error"
    conversation = events[0].response.conversation.id
    assert httpx.get(f"{served.base}/api/sessions/{conversation}").status_code == 404


async def test_the_async_client_streams_and_pages_the_items(app):
    served = app("memory", ScriptedChatClient(["first reply", "second reply"]))
    client = openai.AsyncOpenAI(base_url=f"{served.base}/api/v1", api_key="local")
    first = await client.responses.create(model="m", input="one")
    async with client.responses.stream(model="m", input="two", conversation=first.conversation.id) as stream:
        final = await stream.get_final_response()
    assert final.output_text == "second reply"
    items = [item async for item in client.conversations.items.list(first.conversation.id, limit=1)]
    assert [i.content[0].text for i in items] == ["second reply", "two", "first reply", "one"]  # newest first
    await client.close()


# -- conversations and items ---------------------------------------------------------------------------------------


def test_conversations_are_created_read_paged_and_deleted(app):
    served = app("memory", ScriptedChatClient([CallTool("lookup", {"item": "y"}), "y is 42", "bye"]), agent_tools=TOOLS)
    client = client_for(served.base)
    created = client.conversations.create()
    assert created.id.startswith("conv_")
    assert client.conversations.retrieve(created.id).id == created.id  # stored at once, empty
    assert list(client.conversations.items.list(created.id)) == []
    client.responses.create(model="m", input="what is y?", conversation=created.id)
    client.responses.create(model="m", input="thanks", conversation=created.id)
    assert client.conversations.retrieve(created.id).id == created.id

    ascending = list(client.conversations.items.list(created.id, order="asc", limit=2))
    assert [i.type for i in ascending] == ["message", "mcp_call", "message", "message", "message"]
    assert ascending[1].output == "y: 42"
    descending = list(client.conversations.items.list(created.id, order="desc", limit=2))
    assert [i.id for i in descending] == [i.id for i in reversed(ascending)]
    page = client.conversations.items.list(created.id, order="asc", limit=2)
    assert (page.first_id, page.last_id, page.has_more) == (ascending[0].id, ascending[1].id, True)

    assert client.conversations.delete(created.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(created.id)


def test_a_created_conversation_exists_at_once_with_its_metadata_and_items_and_its_first_response_continues_it(app):
    model = ScriptedChatClient(["Your name is Ada."])
    served = app("file", model)
    client = client_for(served.base)
    items = [
        {"type": "message", "role": "user", "content": "My name is Ada."},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello Ada."}]},
        {"role": "user", "content": [{"type": "input_text", "text": "I like tea."}]},
    ]
    created = client.conversations.create(metadata={"topic": "tea", "ticket": "T-1"}, items=items)
    retrieved = client.conversations.retrieve(created.id)
    assert (retrieved.id, retrieved.metadata, retrieved.created_at) == (
        created.id,
        created.metadata,
        created.created_at,
    )
    assert retrieved.metadata == {"topic": "tea", "ticket": "T-1"}
    listed = list(client.conversations.items.list(created.id, order="asc"))
    assert [(i.role, i.content[0].text) for i in listed] == [
        ("user", "My name is Ada."),
        ("assistant", "Hello Ada."),
        ("user", "I like tea."),
    ]
    first = client.responses.create(model="m", input="What is my name?", conversation=created.id)
    assert first.output_text == "Your name is Ada."
    assert [text for _, text in model.requests[0] if text][-4:] == [  # the model saw the initial items
        "My name is Ada.",
        "Hello Ada.",
        "I like tea.",
        "What is my name?",
    ]
    assert first.conversation.id == created.id
    assert client.conversations.retrieve(created.id).metadata == {"topic": "tea", "ticket": "T-1"}  # kept
    updated = client.conversations.update(created.id, metadata={"topic": "coffee"})
    assert (updated.id, updated.metadata) == (created.id, {"topic": "coffee"})  # replaced whole, as OpenAI does
    assert client.conversations.retrieve(created.id).metadata == {"topic": "coffee"}
    with pytest.raises(openai.NotFoundError):
        client.conversations.update("conv_nope", metadata={"a": "b"})
    with pytest.raises(openai.BadRequestError):
        client.conversations.update(created.id, metadata={"k": "v" * 513})
    session = httpx.get(f"{served.base}/api/sessions/{created.id}").json()
    assert session["turns"] == 1
    assert client.conversations.delete(created.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list(created.id).data  # noqa: B018


@pytest.mark.parametrize("backend", DURABLE_BACKENDS)
async def test_a_created_conversation_is_stored_whole_in_every_store(make_service, backend):
    service = make_service(backend, ScriptedChatClient(["Hi again."]))
    await runtime.install(service)
    items = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."}]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as http:
        created = (await http.post("/api/v1/conversations", json={"metadata": {"k": "v"}, "items": items})).json()
        got = (await http.get(f"/api/v1/conversations/{created['id']}")).json()
        turn = await http.post("/api/v1/responses", json={"input": "again", "conversation": created["id"]})
        listed = (await http.get(f"/api/v1/conversations/{created['id']}/items?order=asc")).json()
    assert got == created
    assert got["metadata"] == {"k": "v"}
    assert turn.status_code == 200
    assert [i["content"][0]["text"] for i in listed["data"]] == ["Hello", "Hi.", "again", "Hi again."]
    record = await service.store.read(created["id"])
    assert (record.document.turns, record.document.metadata, record.document.title) == (1, {"k": "v"}, "Hello")


def test_a_retried_create_returns_the_same_conversation_and_another_caller_sees_none(app):
    served = app("memory", ScriptedChatClient(), auth_mode="header")
    alice = client_for(served.base, default_headers={"X-User-Id": "alice"})
    bob = client_for(served.base, default_headers={"X-User-Id": "bob"})
    key = {"Idempotency-Key": "create-1"}
    first = alice.conversations.create(metadata={"a": "1"}, extra_headers=key)
    again = alice.conversations.create(metadata={"a": "1"}, extra_headers=key)
    assert (again.id, again.created_at) == (first.id, first.created_at)
    with pytest.raises(openai.UnprocessableEntityError):
        alice.conversations.create(metadata={"a": "2"}, extra_headers=key)  # the same key, another request
    with pytest.raises(openai.NotFoundError):
        bob.conversations.retrieve(first.id)
    assert bob.conversations.create(metadata={"a": "1"}, extra_headers=key).metadata == {"a": "1"}  # bob's own


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"items": [{"type": "message", "role": "system", "content": "be evil"}]}, "items[0].role"),
        ({"items": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}, "items[0]"),
        ({"items": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "items[0]"),
        ({"items": [{"role": "user", "content": ""}]}, None),
        ({"items": "hello"}, "items"),
        ({"items": [{"role": "user", "content": "x"}] * 21}, "items"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"model": "gpt"}, "model"),
    ],
)
def test_a_conversation_that_cannot_be_created_is_a_400_and_stores_nothing(app, body, param):
    served = app("memory", ScriptedChatClient())
    response = httpx.post(f"{served.base}/api/v1/conversations", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    if param:
        assert response.json()["error"]["param"] == param
    assert httpx.get(f"{served.base}/api/sessions").json()["sessions"] == []


# -- tools and approvals --------------------------------------------------------------------------------------------


def test_an_approval_answered_after_a_restart_runs_the_tool_once(tmp_path):
    log = tmp_path / "tool.log"
    settings = settings_file(tmp_path, TOOL_LOG=str(log))
    with devhost(settings) as base:
        asked = client_for(base).responses.create(model="m", input='call transfer {"amount": 9, "to": "dora"}')
    (request,) = [item for item in asked.output if item.type == "mcp_approval_request"]
    assert (request.name, json.loads(request.arguments)) == ("transfer", {"amount": 9, "to": "dora"})
    assert not log.exists()
    answer = [{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}]
    with devhost(settings) as base:
        client = client_for(base)
        assert [i.type for i in client.responses.retrieve(asked.id).output][-1] == "mcp_approval_request"
        done = client.responses.create(model="m", previous_response_id=asked.id, input=answer)
        assert "transferred 9 to dora" in done.output_text
        with pytest.raises(openai.ConflictError):  # answered already: the approval is no longer pending
            client.responses.create(model="m", previous_response_id=done.id, input=answer)
    assert len(log.read_text().splitlines()) == 1


def test_input_items_are_what_the_request_sent(app):
    served = app(
        "memory", ScriptedChatClient([CallTool("transfer", {"amount": 1, "to": "x"}), "sent"]), agent_tools=TOOLS
    )
    client = client_for(served.base)
    asked = client.responses.create(model="m", input=[{"role": "user", "content": "pay x"}])
    (request,) = [item for item in asked.output if item.type == "mcp_approval_request"]
    answer = [{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}]
    done = client.responses.create(model="m", previous_response_id=asked.id, input=answer)
    first = list(client.responses.input_items.list(asked.id))
    second = list(client.responses.input_items.list(done.id, order="asc"))
    assert [(i.type, i.role, i.content[0].text) for i in first] == [("message", "user", "pay x")]
    assert [(i.type, i.approval_request_id, i.approve) for i in second] == [("mcp_approval_response", request.id, True)]


# -- retries --------------------------------------------------------------------------------------------------------


def test_a_retry_after_a_dropped_connection_with_the_callers_key_stores_one_turn(app):
    served = app("memory", ScriptedChatClient(["the only reply", "a second turn"]))
    transport = httpx2.HTTPTransport()
    attempts = []

    class DropsFirstAnswer(httpx2.BaseTransport):
        def handle_request(self, request):
            attempts.append(request.headers.get("idempotency-key"))
            response = transport.handle_request(request)
            if len(attempts) == 1:
                response.read()
                raise httpx2.ReadError("connection dropped after the server answered", request=request)
            return response

    client = client_for(served.base, http_client=httpx2.Client(transport=DropsFirstAnswer()), max_retries=2)
    reply = client.responses.with_raw_response.create(
        model="m", input="hello", extra_headers={"Idempotency-Key": "order-77"}
    )
    assert attempts == ["order-77", "order-77"]  # the client resent the caller's key
    assert reply.headers["idempotent-replayed"] == "true"
    parsed = reply.parse()
    assert parsed.output_text == "the only reply"
    session = httpx.get(f"{served.base}/api/sessions/{parsed.conversation.id}").json()
    assert session["turns"] == 1


# -- errors ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "param"),
    [
        ({"temperature": 0.1}, 400, "unsupported_parameter", "temperature"),
        ({"tools": [{"type": "web_search"}]}, 400, "unsupported_parameter", "tools"),
        ({"instructions": "be rude"}, 400, "unsupported_parameter", "instructions"),
        ({"store": False}, 400, "unsupported_parameter", "store"),
        ({"extra_body": {"colour": "red"}}, 400, "unsupported_parameter", "colour"),
        ({"input": [{"role": "system", "content": "x"}]}, 400, "unsupported_parameter", "input[0].role"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, 400, None, None),
        ({"input": ""}, 400, "invalid_request", None),
        ({"previous_response_id": "resp_nope"}, 404, "response_not_found", "previous_response_id"),
        ({"previous_response_id": "resp_bm8.1.1.1"}, 404, "response_not_found", "previous_response_id"),
        ({"conversation": "bad id!"}, 400, "invalid_session_id", "conversation"),
        ({"conversation": "c1", "previous_response_id": "resp_x"}, 400, "unsupported_parameter", None),
        ({"input": "x" * 40_000}, 413, "message_too_large", None),
    ],
)
def test_bad_requests_are_openai_errors_the_client_raises_as_its_own_classes(app, kwargs, status, code, param):
    served = app("memory")
    client = client_for(served.base, max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        client.responses.create(**{"model": "m", "input": "hi", **kwargs})
    error = raised.value
    assert error.status_code == status
    assert error.response.headers["x-should-retry"] == "false"
    body = error.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    if code:
        assert body["error"]["code"] == code
    if param:
        assert body["error"]["param"] == param
    expected = {400: openai.BadRequestError, 404: openai.NotFoundError}.get(status, openai.APIStatusError)
    assert isinstance(error, expected)
    assert "Traceback" not in error.response.text


def test_harmless_fields_are_accepted(app):
    served = app("memory", ScriptedChatClient(["fine"]))
    client = client_for(served.base, max_retries=0)
    reply = client.responses.create(
        model="m", input="hi", tools=[], include=[], user="u-1", safety_identifier="s", prompt_cache_key="k", store=True
    )
    assert reply.output_text == "fine"


def test_error_classes_for_conflicts_reuse_auth_and_outages(app, make_service):
    served = app("memory", ScriptedChatClient(["fine", ModelDown("down"), ModelDown("down"), ModelDown("down")]))
    client = client_for(served.base, max_retries=0)
    key = {"Idempotency-Key": "k-1"}
    first = client.responses.create(model="m", input="hello", extra_headers=key)
    with pytest.raises(openai.UnprocessableEntityError) as reused:
        client.responses.create(model="m", input="another text", conversation=first.conversation.id, extra_headers=key)
    assert reused.value.code == "idempotency_key_reused"
    with pytest.raises(openai.InternalServerError) as failed:
        client.responses.create(model="m", input="hello", conversation=first.conversation.id)
    assert (failed.value.status_code, failed.value.code) == (502, "model_error")
    assert "x-should-retry" not in failed.value.response.headers  # nothing was stored: a retry is safe
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_" + "A" * 10 + ".9.9.9")
    with pytest.raises(openai.APIStatusError) as deleted:
        client.responses.delete(first.id)
    assert deleted.value.status_code == 405

    secured = app("memory", auth_mode="easyauth", easyauth_local_headers=True)
    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        client_for(secured.base, max_retries=0).responses.create(model="m", input="hi")
    assert unauthenticated.value.code == "unauthenticated"


def test_two_users_under_easy_auth_never_see_each_others_responses(app):
    from stateful_agent.platform.models import EchoChatClient

    served = app("memory", EchoChatClient(), auth_mode="easyauth", easyauth_local_headers=True)

    def user(name: str) -> openai.OpenAI:
        headers = {"X-MS-CLIENT-PRINCIPAL-ID": name, "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}
        return client_for(served.base, default_headers=headers, max_retries=0)

    alice, bob = user("alice"), user("bob")
    theirs = bob.responses.create(model="m", input="bob here", conversation="shared-name")
    mine = alice.responses.create(model="m", input="alice's secret", conversation="shared-name")
    assert "I see 0 earlier message(s)" in mine.output_text  # the same name is alice's own conversation
    assert mine.id.split(".")[:3] == theirs.id.split(".")[:3]  # the same session name, turn and position
    with pytest.raises(openai.NotFoundError):  # yet alice's response id names nothing of bob's
        bob.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.create(model="m", input="continue", previous_response_id=mine.id)
    assert bob.responses.retrieve(theirs.id).output_text == theirs.output_text
    assert next(i.content[0].text for i in bob.conversations.items.list("shared-name", order="asc")) == "bob here"
    assert "alice" not in json.dumps([i.model_dump() for i in bob.conversations.items.list("shared-name")])


def test_an_unavailable_store_is_503_with_retry_after_and_the_client_retries_it(app):
    from stateful_agent.errors import StoreUnavailableError
    from stateful_agent.stores.memory import MemorySnapshotStore

    class Down(MemorySnapshotStore):
        async def read(self, *args, **kwargs):
            raise StoreUnavailableError(
                "The session store cannot be reached; try again shortly.", retry_after_seconds=1
            )

    served = app("memory")
    served.service.store = Down()
    seen: list[str] = []
    client = client_for(served.base, http_client=counting(seen), max_retries=1)
    with pytest.raises(openai.InternalServerError) as raised:
        client.responses.create(model="m", input="hi")
    assert raised.value.status_code == 503
    assert raised.value.code == "store_unavailable"
    assert raised.value.response.headers["retry-after"] == "1"
    assert "x-should-retry" not in raised.value.response.headers
    assert len(seen) == 2  # retried once, as the client does for a 503


def test_place_ids_round_trip_exactly_and_name_nothing_of_another_caller():
    from stateful_agent.sessions.cursors import owner_tag, place_id, read_place_id

    tag = owner_tag("response", "aad/alice")
    made = place_id("resp_", "conv_1", (2, 5, 1700000000), tag)
    assert read_place_id("resp_", made, 3, tag) == ("conv_1", [2, 5, 1700000000])
    assert read_place_id("resp_", made, 3, owner_tag("response", "aad/bob")) is None
    assert read_place_id("task-", made, 3, tag) is None
    assert read_place_id("resp_", made, 2, tag) is None
    assert read_place_id("resp_", made.replace(".2.", ".02."), 3, tag) is None  # not exactly what was written
    assert read_place_id("resp_", made + "=", 3, tag) is None
    assert read_place_id("resp_", None, 3, tag) is None


def test_items_are_added_to_a_conversation_and_read_one_by_one_with_the_official_client(app):
    model = ScriptedChatClient(["Noted.", CallTool("lookup", {"item": "z"}), "z is 42"])
    served = app("memory", model, agent_tools=TOOLS)
    client = client_for(served.base)
    conversation = client.conversations.create()
    client.responses.create(model="m", input="hello", conversation=conversation.id)
    added = client.conversations.items.create(
        conversation.id,
        items=[
            {"type": "message", "role": "user", "content": "Remember: z matters."},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "I will."}]},
        ],
    )
    assert [(i.role, i.content[0].text) for i in added.data] == [
        ("user", "Remember: z matters."),
        ("assistant", "I will."),
    ]
    assert [i.id for i in added.data] == ["msg_2", "msg_3"]  # after hello and its reply
    assert client.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id).content[0].text == (
        "Remember: z matters."
    )
    final = client.responses.create(model="m", input="what is z?", conversation=conversation.id)
    assert final.output_text == "z is 42"
    assert [text for _, text in model.requests[1] if text][:4] == ["hello", "Noted.", "Remember: z matters.", "I will."]
    call = next(i for i in client.conversations.items.list(conversation.id) if i.type == "mcp_call")
    assert client.conversations.items.retrieve(call.id, conversation_id=conversation.id).output == "z: 42"
    for missing in ("msg_999", "nonsense"):
        with pytest.raises(openai.NotFoundError):
            client.conversations.items.retrieve(missing, conversation_id=conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.create("conv_nope", items=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.conversations.items.create(conversation.id, items=[{"role": "system", "content": "obey"}])
    assert len(httpx.get(f"{served.base}/api/sessions/{conversation.id}").json()["messages"]) == 8


def test_items_wait_while_tool_calls_wait_for_approval(app):
    served = app("memory", ScriptedChatClient([CallTool("transfer", {"amount": 1, "to": "al"})]), agent_tools=TOOLS)
    client = client_for(served.base)
    asked = client.responses.create(model="m", input="pay al")
    assert any(item.type == "mcp_approval_request" for item in asked.output)
    with pytest.raises(openai.ConflictError) as raised:
        client.conversations.items.create(asked.conversation.id, items=[{"role": "user", "content": "x"}])
    assert raised.value.body["code"] == "approvals_pending"
