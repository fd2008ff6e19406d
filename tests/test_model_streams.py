"""The app against model servers that stream as OpenAI, Azure OpenAI and llama.cpp do.

The model path is the real one (MAF's ``OpenAIChatCompletionClient`` and the ``openai`` SDK over HTTP) and
the server (``testkit/openai_server.py``) sends the providers' wire shapes: tool calls in fragments, parallel
calls interleaved by index, a usage-only last chunk, Azure's prompt-filter first chunk and annotation
chunks, and streams that break off.
"""

from __future__ import annotations

import json
from contextlib import ExitStack

import httpx
import pytest

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from testkit.openai_server import Call, Calls, Empty, Reply, chat_completions_server
from testkit.support import service_for, sse_events
from tests import tools_for_tests

TOOLS = "tests.tools_for_tests:TOOLS"
TURN = "/api/sessions/s1/turns"
SSE = {"Accept": "text/event-stream"}
#: The providers' stream shapes: (server flavor, how the app is configured for it).
FLAVORS = ["openai", "azure"]


@pytest.fixture(autouse=True)
def _no_runs_yet():
    tools_for_tests.RUNS.clear()


@pytest.fixture
async def model_app(backend_settings):
    """Factory: a model server with ``script``, and an HTTP client of the app whose model it is."""
    with ExitStack() as stack:
        services = []

        async def start(script, *, flavor="openai", backend="memory", **extra):
            server = stack.enter_context(chat_completions_server(script, flavor))
            if flavor == "azure":
                model = {
                    "model_provider": "azure_openai",
                    "azure_openai_endpoint": server.url,
                    "azure_openai_model": "chat",
                    "azure_openai_api_key": "test-key",
                }
            else:
                model = {"model_provider": "openai", "openai_base_url": f"{server.url}/v1", "openai_model": "gpt-test"}
            settings = backend_settings(backend, agent_tools=TOOLS, model_max_retries=0, **model, **extra)
            service = service_for(settings, None)
            services.append(service)
            await runtime.install(service)
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t")
            return server, client

        yield start
        for service in services:
            await service.store.close()
        await runtime.install(None)


def tool_events(events):
    return [(kind, data) for kind, data in events if kind in ("tool_call", "tool_result")]


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("repeat_header", [False, True], ids=["openai-fragments", "llamacpp-fragments"])
async def test_a_call_streamed_in_fragments_is_one_tool_call_event(model_app, flavor, repeat_header):
    script = [Calls([Call("lookup", {"item": "Oslo"})], repeat_header=repeat_header), Reply("Oslo is 42.")]
    server, client = await model_app(script, flavor=flavor)
    async with client:
        response = await client.post(TURN, json={"message": "look up Oslo"}, headers=SSE)
        page = (await client.get("/api/sessions/s1/messages")).json()["messages"]
    events = sse_events(response.text)
    (call_id,) = {data["id"] for _, data in tool_events(events)}
    assert tool_events(events) == [
        ("tool_call", {"id": call_id, "name": "lookup", "arguments": {"item": "Oslo"}}),
        ("tool_result", {"id": call_id, "name": "lookup", "result": "Oslo: 42"}),
    ]
    assert [kind for kind, _ in events][-1] == "done"
    assert events[-1][1]["reply"] == "Oslo is 42."
    assert "".join(data["text"] for kind, data in events if kind == "delta") == "Oslo is 42."
    assert page[1]["tool_calls"] == [{"id": call_id, "name": "lookup", "arguments": {"item": "Oslo"}}]
    assert page[2] == {"index": 2, "role": "tool", "tool_call_id": call_id, "name": "lookup", "result": "Oslo: 42"}
    # the model was sent the whole call and its result on its second request
    sent = server.requests[1]["messages"]
    assert [m["role"] for m in sent[-3:]] == ["user", "assistant", "tool"]
    assert json.loads(sent[-2]["tool_calls"][0]["function"]["arguments"]) == {"item": "Oslo"}


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("interleave", [False, True], ids=["sequential", "interleaved"])
@pytest.mark.parametrize("count", [2, 3])
async def test_parallel_calls_give_one_event_each_in_order(model_app, flavor, interleave, count):
    cities = ["Oslo", "Bergen", "Tromsø"][:count]
    calls = [Call("lookup", {"item": city}) for city in cities]
    _server, client = await model_app([Calls(calls, interleave=interleave), Reply("All 42.")], flavor=flavor)
    async with client:
        events = sse_events((await client.post(TURN, json={"message": "look them up"}, headers=SSE)).text)
        json_view = (await client.get("/api/sessions/s1")).json()["messages"]
    steps = tool_events(events)
    calls_seen = [data for kind, data in steps if kind == "tool_call"]
    results_seen = [data for kind, data in steps if kind == "tool_result"]
    assert [kind for kind, _ in steps] == ["tool_call"] * count + ["tool_result"] * count
    assert [(c["name"], c["arguments"]) for c in calls_seen] == [("lookup", {"item": city}) for city in cities]
    assert len({c["id"] for c in calls_seen}) == count
    assert [(r["id"], r["name"], r["result"]) for r in results_seen] == [
        (c["id"], "lookup", f"{city}: 42") for c, city in zip(calls_seen, cities, strict=True)
    ]
    assert json_view[1]["tool_calls"] == calls_seen  # what is stored is what was streamed


async def test_arguments_that_never_become_json_are_shown_raw_once(model_app):
    script = [Calls([Call("lookup", '{"item": "Oslo"')]), Reply("That did not work.")]
    _server, client = await model_app(script)
    async with client:
        events = sse_events((await client.post(TURN, json={"message": "look"}, headers=SSE)).text)
    calls = [data for kind, data in events if kind == "tool_call"]
    assert [c["arguments"] for c in calls] == [{"raw": '{"item": "Oslo"'}]
    assert events[-1][0] == "done"


async def test_a_json_turn_against_the_same_stream_shapes_stores_the_same_transcript(model_app):
    script = [Calls([Call("lookup", {"item": "a"}), Call("lookup", {"item": "b"})]), Reply("Both 42.")]
    server, client = await model_app(script, flavor="azure")
    async with client:
        result = (await client.post(TURN, json={"message": "look"})).json()
        page = (await client.get("/api/sessions/s1/messages")).json()["messages"]
    assert result["reply"] == "Both 42."
    assert [c["arguments"] for c in page[1]["tool_calls"]] == [{"item": "a"}, {"item": "b"}]
    assert [m["result"] for m in page[2:4]] == ["a: 42", "b: 42"]
    assert server.requests[0].get("stream") in (None, False)


@pytest.mark.parametrize("flavor", FLAVORS)
async def test_usage_comes_from_the_usage_only_chunks_of_every_model_call(model_app, flavor):
    server, client = await model_app([Calls([Call("lookup", {"item": "x"})]), Reply("ok")], flavor=flavor)
    async with client:
        events = sse_events((await client.post(TURN, json={"message": "look"}, headers=SSE)).text)
    usage = events[-1][1]["usage"]
    assert all(r["stream_options"] == {"include_usage": True} for r in server.requests)
    assert usage["input_tokens"] > 0
    assert usage["output_tokens"] >= 2  # both calls reported some
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


@pytest.mark.parametrize("broken", [Empty(), Reply("It is 4", finish=None)], ids=["empty-stream", "no-finish"])
@pytest.mark.parametrize("stream", [True, False], ids=["sse", "json"])
async def test_a_last_model_call_that_broke_off_after_a_tool_stores_nothing(model_app, backend, broken, stream):
    script = [Calls([Call("lookup", {"item": "x"})]), broken, Reply("Recovered.")]
    _server, client = await model_app(script, backend=backend)
    async with client:
        response = await client.post(TURN, json={"message": "look"}, headers=SSE if stream else {})
        after = await client.get("/api/sessions/s1")
        retry = (await client.post(TURN, json={"message": "look"})).json()
    if stream:
        events = sse_events(response.text)
        assert events[-1][0] == "error"
        assert events[-1][1]["code"] == "model_error"
        assert "done" not in [kind for kind, _ in events]
    else:
        assert response.status_code == 502
        assert response.json()["code"] == "model_error"
    assert after.status_code == 404  # nothing was stored
    assert (retry["turn"], retry["reply"]) == (1, "Recovered.")


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("stream", [True, False], ids=["sse", "json"])
async def test_a_first_model_call_that_answers_nothing_stores_nothing(model_app, flavor, stream):
    _server, client = await model_app([Empty(), Reply("Now it works.")], flavor=flavor)
    async with client:
        response = await client.post(TURN, json={"message": "hi"}, headers=SSE if stream else {})
        after = await client.get("/api/sessions/s1")
    code = sse_events(response.text)[-1][1]["code"] if stream else response.json()["code"]
    assert code == "model_error"
    assert after.status_code == 404


async def test_an_approval_after_a_fragmented_call_runs_the_tool_once(model_app, backend):
    script = [Calls([Call("transfer", {"amount": 5, "to": "bob"})], text="I will transfer."), Reply("Done.")]
    _server, client = await model_app(script, backend=backend)
    async with client:
        events = sse_events((await client.post(TURN, json={"message": "pay bob 5"}, headers=SSE)).text)
        (approval,) = [data for kind, data in events if kind == "approval"]
        answer = {"approvals": [{"id": approval["id"], "approved": True}]}
        answered = sse_events((await client.post(TURN, json=answer, headers=SSE)).text)
    assert [kind for kind, _ in events if kind != "delta"] == ["tool_call", "approval", "done"]
    (call,) = [data for kind, data in events if kind == "tool_call"]
    assert (call["name"], call["arguments"]) == ("transfer", {"amount": 5, "to": "bob"})
    assert (approval["name"], approval["arguments"]) == ("transfer", {"amount": 5, "to": "bob"})
    assert answered[-1][1]["reply"] == "Done."
    assert ("tool_result", {"id": call["id"], "name": "transfer", "result": "transferred 5 to bob"}) in answered
    assert tools_for_tests.RUNS == [(5, "bob")]


async def test_an_answered_approval_whose_follow_up_broke_off_is_interrupted_not_rerun(model_app):
    script = [Calls([Call("transfer", {"amount": 5, "to": "bob"})]), Empty(), Reply("It may have run.")]
    _server, client = await model_app(script)
    async with client:
        (approval,) = (await client.post(TURN, json={"message": "pay bob 5"})).json()["approvals"]
        answer = {"approvals": [{"id": approval["id"], "approved": True}]}
        failed = sse_events((await client.post(TURN, json=answer, headers=SSE)).text)
        again = await client.post(TURN, json=answer)
        later = (await client.post(TURN, json={"message": "did it work?"})).json()
    assert failed[-1][1]["code"] == "model_error"
    assert again.json()["code"] == "approval_not_pending"
    assert later["reply"] == "It may have run."
    assert tools_for_tests.RUNS == [(5, "bob")]  # ran once, never again


async def test_the_output_cap_is_sent_on_every_model_call(model_app):
    server, client = await model_app(
        [Calls([Call("lookup", {"item": "x"})]), Reply("cut", finish="length")], model_max_output_tokens=256
    )
    async with client:
        result = (await client.post(TURN, json={"message": "look"}, headers=SSE)).text
    assert sse_events(result)[-1][0] == "done"  # a reply cut at the cap finished ("length"): stored
    assert [r.get("max_completion_tokens") for r in server.requests] == [256, 256]


async def test_without_an_output_cap_none_is_sent(model_app):
    server, client = await model_app([Reply("hi")])
    async with client:
        await client.post(TURN, json={"message": "hi"})
    assert "max_completion_tokens" not in server.requests[0]
    assert "max_tokens" not in server.requests[0]


def fragment(call_id: str, name: str, arguments: str, index: int):
    from agent_framework import AgentResponseUpdate, Content

    content = Content.from_function_call(
        call_id=call_id, name=name, arguments=arguments, additional_properties={"tool_call_index": index}
    )
    return AgentResponseUpdate(contents=[content], role="assistant", message_id=f"chatcmpl-{call_id}")


def test_in_a_sequential_stream_a_call_is_reported_when_the_next_one_begins():
    from stateful_agent.turns.tool_steps import ToolSteps

    steps = ToolSteps()
    assert steps.feed(fragment("c1", "lookup", "", 0)) == []
    assert steps.feed(fragment("c1", "", '{"item": ', 0)) == []
    assert steps.feed(fragment("c1", "", '"a"}', 0)) == []
    (first,) = steps.feed(fragment("c2", "lookup", "", 1))  # c1 is whole: the model went on to c2
    assert first.data == {"id": "c1", "name": "lookup", "arguments": {"item": "a"}}
    assert steps.feed(fragment("c2", "", '{"item": "b"}', 1)) == []
    assert steps.feed(fragment("c1", "lookup", "\n", 0)) == []  # a late fragment of a reported call
    (second,) = steps.flush()
    assert second.data == {"id": "c2", "name": "lookup", "arguments": {"item": "b"}}
    assert steps.flush() == []  # each call once


def test_fragments_without_an_id_join_the_call_of_their_index():
    from agent_framework import AgentResponseUpdate

    from stateful_agent.turns.tool_steps import ToolSteps

    steps = ToolSteps()
    steps.feed(fragment("c1", "lookup", "", 0))
    steps.feed(fragment("c2", "lookup", "", 1))
    for piece, index in [('{"item"', 0), ('{"item"', 1), (': "a"}', 0), (': "b"}', 1)]:
        assert steps.feed(fragment("", "", piece, index)) == []
    finished = AgentResponseUpdate(contents=[], role="assistant", finish_reason="tool_calls")
    events = steps.feed(finished)
    assert [e.data["arguments"] for e in events] == [{"item": "a"}, {"item": "b"}]


@pytest.mark.parametrize("flavor", FLAVORS)
async def test_the_responses_api_shows_interleaved_parallel_calls_as_one_mcp_call_each(model_app, flavor):
    import httpx2
    import openai
    from openai.types.responses import ResponseStreamEvent
    from pydantic import TypeAdapter

    calls = [Call("lookup", {"item": city}) for city in ("Oslo", "Lima", "Pune")]
    _server, _client = await model_app([Calls(calls, interleave=True), Reply("All 42.")], flavor=flavor)
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=build_app()), base_url="http://t")
    client = openai.AsyncOpenAI(base_url="http://t/api/v1", api_key="local", http_client=http, max_retries=0)
    async with client.responses.stream(model="m", input="look them up") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    await client.close()
    adapter = TypeAdapter(ResponseStreamEvent)
    for event in events:
        adapter.validate_python(event.model_dump(mode="json", exclude_unset=True, warnings=False))
    items = [item for item in final.output if item.type == "mcp_call"]
    assert [json.loads(item.arguments) for item in items] == [{"item": "Oslo"}, {"item": "Lima"}, {"item": "Pune"}]
    assert [item.output for item in items] == ["Oslo: 42", "Lima: 42", "Pune: 42"]
    assert all(item.status == "completed" for item in items)
    assert final.output_text == "All 42."
    assert final.usage.total_tokens > 0
    added = [e for e in events if e.type == "response.output_item.added" and e.item.type == "mcp_call"]
    assert len(added) == 3  # one item per call, however the model streamed its fragments
