"""Tools, human approval across requests and processes, and token usage per turn."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from stateful_agent.errors import ApprovalNotPendingError, ConfigurationError, ModelError, SessionConflictError
from stateful_agent.platform.tools import load_tools
from testkit.servers import clean_env
from testkit.support import (
    CallTool,
    ModelDown,
    ScriptedChatClient,
    run_in_new_process,
    settings_environment,
    sse_events,
)
from tests import tools_for_tests
from tests.conftest import DURABLE_BACKENDS, ROOT

TOOLS = "tests.tools_for_tests:TOOLS"
TURN = "/api/sessions/s1/turns"
TRANSFER = CallTool("transfer", {"amount": 5, "to": "bob"}, text="I will transfer.")


@pytest.fixture(autouse=True)
def _no_runs_yet():
    tools_for_tests.RUNS.clear()


async def http(service) -> httpx.AsyncClient:
    await runtime.install(service)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t")


# -- tools --------------------------------------------------------------------------------------------------


async def test_a_tool_turn_end_to_end_with_the_transcript_showing_calls_and_results(make_service, backend):
    model = ScriptedChatClient([CallTool("lookup", {"item": "answer"}), "The answer is 42."])
    service = make_service(backend, model, agent_tools=TOOLS)
    async with await http(service) as client:
        response = await client.post(TURN, json={"message": "What is the answer?"})
        assert response.json() == {
            "session_id": "s1",
            "turn": 1,
            "reply": "The answer is 42.",
            "approvals": [],
            "usage": None,
        }
        assert model.requests[1][-1] == ("tool", "")  # the model got the tool's result
        page = (await client.get("/api/sessions/s1/messages")).json()
        described = (await client.get("/api/sessions/s1")).json()
    assert page["messages"] == [
        {"index": 0, "role": "user", "text": "What is the answer?"},
        {
            "index": 1,
            "role": "assistant",
            "text": "",
            "tool_calls": [{"id": "call-1", "name": "lookup", "arguments": {"item": "answer"}}],
        },
        {"index": 2, "role": "tool", "tool_call_id": "call-1", "name": "lookup", "result": "answer: 42"},
        {"index": 3, "role": "assistant", "text": "The answer is 42."},
    ]
    assert [{k: v for k, v in m.items() if k != "index"} for m in page["messages"]] == described["messages"]


async def test_a_streamed_tool_turn_reports_the_call_and_the_result_in_order(make_service, backend):
    model = ScriptedChatClient([CallTool("lookup", {"item": "x"}), "Found it."])
    async with await http(make_service(backend, model, agent_tools=TOOLS)) as client:
        response = await client.post(TURN, json={"message": "look"}, headers={"Accept": "text/event-stream"})
    events = sse_events(response.text)
    assert [kind for kind, _ in events] == ["tool_call", "tool_result", "delta", "delta", "done"]
    assert events[0][1] == {"id": "call-1", "name": "lookup", "arguments": {"item": "x"}}
    assert events[1][1] == {"id": "call-1", "name": "lookup", "result": "x: 42"}
    assert events[-1][1]["reply"] == "Found it."


async def test_a_tool_that_raises_is_reported_to_the_model_and_the_turn_is_stored(make_service):
    model = ScriptedChatClient([CallTool("explode", {}), "The tool failed, sorry."])
    async with await http(make_service("memory", model, agent_tools=TOOLS)) as client:
        response = await client.post(TURN, json={"message": "go"})
        page = (await client.get("/api/sessions/s1/messages")).json()
    assert response.status_code == 200
    assert response.json()["reply"] == "The tool failed, sorry."
    tool_message = page["messages"][2]
    assert tool_message["role"] == "tool"
    assert tool_message["name"] == "explode"


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("no_colon", "not 'module:attribute'"),
        ("tests.missing_module:TOOLS", "cannot load 'tests.missing_module:TOOLS'"),
        ("tests.tools_for_tests:NOPE", "cannot load 'tests.tools_for_tests:NOPE'"),
        ("tests.tools_for_tests:RUNS", "names no tool"),
        ("json:JSONDecoder", "holds a type, not a tool"),
        ("json:__name__", "holds a str, not a tool"),
    ],
)
def test_a_bad_tool_reference_is_a_configuration_error_naming_it(spec, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        load_tools(spec)


def test_tools_load_from_lists_single_tools_and_plain_functions():
    tools = load_tools(" tests.tools_for_tests:TOOLS , tests.tools_for_tests:lookup,samples.tools:TOOLS ")
    assert [getattr(t, "name", None) for t in tools] == [
        "lookup",
        "explode",
        "transfer",
        "lookup",
        "get_weather",
        "send_payment",
    ]


async def test_a_bad_tool_reference_is_reported_on_first_use_under_the_functions_host(make_service):
    async with await http(make_service("memory", agent_tools="tests.nowhere:TOOLS")) as client:
        response = await client.post(TURN, json={"message": "hi"})
        assert (await client.get("/api/health")).status_code == 200
    assert response.status_code == 500
    assert response.json()["code"] == "configuration_error"
    assert "tests.nowhere:TOOLS" in response.json()["detail"]


def test_the_local_host_reports_a_bad_tool_reference_at_startup(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "stateful_agent.devhost", "--port", "1", "--settings-file", ""],
        cwd=ROOT,
        env=clean_env(AGENT_TOOLS="samples.tools:NOTHING", MAF_SESSION_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert "samples.tools:NOTHING" in completed.stderr


# -- approvals --------------------------------------------------------------------------------------------


async def test_an_approved_tool_runs_once_after_the_answer(make_service, backend):
    model = ScriptedChatClient([TRANSFER, "Done: transferred."])
    service = make_service(backend, model, agent_tools=TOOLS)
    async with await http(service) as client:
        asked = (await client.post(TURN, json={"message": "pay bob 5"})).json()
        assert asked["reply"] == "I will transfer."
        (approval,) = asked["approvals"]
        assert (approval["name"], approval["arguments"]) == ("transfer", {"amount": 5, "to": "bob"})
        assert tools_for_tests.RUNS == []  # not run without an answer
        assert (await client.get("/api/sessions/s1")).json()["pending_approvals"] == [approval]

        blocked = await client.post(TURN, json={"message": "never mind"})
        assert blocked.status_code == 409
        assert blocked.json()["code"] == "approvals_pending"
        assert blocked.json()["pending_approvals"] == [approval]

        answered = await client.post(TURN, json={"approvals": [{"id": approval["id"], "approved": True}]})
        assert answered.status_code == 200
        assert answered.json()["turn"] == 2
        assert answered.json()["reply"] == "Done: transferred."
        assert answered.json()["approvals"] == []
        assert tools_for_tests.RUNS == [(5, "bob")]

        again = await client.post(TURN, json={"approvals": [{"id": approval["id"], "approved": True}]})
        assert again.status_code == 409
        assert again.json()["code"] == "approval_not_pending"
        assert (await client.get("/api/sessions/s1")).json()["pending_approvals"] == []
        page = (await client.get("/api/sessions/s1/messages")).json()["messages"]
    assert tools_for_tests.RUNS == [(5, "bob")]
    assert any(m.get("approvals") == [{"id": approval["id"], "approved": True}] for m in page)
    assert any(m["role"] == "tool" and m["result"] == "transferred 5 to bob" for m in page)


async def test_a_rejected_tool_never_runs_and_the_model_is_told(make_service, backend):
    model = ScriptedChatClient([TRANSFER, "Understood, I will not."])
    async with await http(make_service(backend, model, agent_tools=TOOLS)) as client:
        (approval,) = (await client.post(TURN, json={"message": "pay bob 5"})).json()["approvals"]
        response = await client.post(
            TURN, json={"approvals": [{"id": approval["id"], "approved": False}], "message": "No, don't."}
        )
    assert response.json()["reply"] == "Understood, I will not."
    assert tools_for_tests.RUNS == []
    assert ("user", "No, don't.") in model.requests[-1]
    assert ("tool", "") in model.requests[-1]  # the rejection reached the model as the call's result


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"approvals": [{"id": "no-such-id", "approved": True}]}, "approval_not_pending"),
        ({"approvals": [{"id": "x", "approved": "yes"}]}, "invalid_request"),
        ({"approvals": []}, "invalid_request"),
        ({"approvals": [{"id": "", "approved": True}]}, "invalid_request"),
        ({"approvals": [{"id": "x"}]}, "invalid_request"),
        ({"approvals": "all"}, "invalid_request"),
    ],
)
async def test_bad_approval_answers_are_refused_and_change_nothing(make_service, body, code):
    service = make_service("memory", ScriptedChatClient([TRANSFER]), agent_tools=TOOLS)
    async with await http(service) as client:
        await client.post(TURN, json={"message": "pay"})
        before = await service.store.read("s1")
        response = await client.post(TURN, json=body)
    assert response.json()["code"] == code
    assert await service.store.read("s1") == before
    assert tools_for_tests.RUNS == []


async def test_every_pending_approval_must_be_answered_in_one_request(make_service):
    two = CallTool("transfer", {"amount": 1, "to": "a"})
    model = ScriptedChatClient([two, "Both done."])
    service = make_service("memory", model, agent_tools=TOOLS)
    prepared = await service.run_turn("s1", "pay")
    # a second request for approval in the same session: add one more pending by a second scripted call
    assert len(prepared.approvals) == 1
    with pytest.raises(ApprovalNotPendingError):
        await service.run_turn("s1", None, answers=[(prepared.approvals[0]["id"], True), ("other", True)])
    assert tools_for_tests.RUNS == []


async def test_two_racing_answers_run_the_tool_at_most_once(make_service, backend):
    gate = asyncio.Event()
    model = ScriptedChatClient([TRANSFER, "first answer done", "second answer done"], gate=gate)
    service = make_service(backend, model, agent_tools=TOOLS)
    gate.set()
    (approval,) = (await service.run_turn("s1", "pay bob")).approvals
    gate.clear()

    answer = [(approval["id"], True)]
    tasks = [asyncio.create_task(service.run_turn("s1", None, answers=answer)) for _ in range(2)]
    await asyncio.sleep(0.2)  # both have read the pending approval; one claim won, the other lost before any tool
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, BaseException)]
    assert len(wins) == 1
    assert len(losses) == 1
    assert isinstance(losses[0], SessionConflictError | ApprovalNotPendingError)
    assert tools_for_tests.RUNS == [(5, "bob")]
    assert (await service.describe("s1"))["turns"] == 2


async def test_an_idempotent_retry_of_an_answer_replays_it(make_service, backend):
    model = ScriptedChatClient([TRANSFER, "transferred it"])
    service = make_service(backend, model, agent_tools=TOOLS)
    (approval,) = (await service.run_turn("s1", "pay bob")).approvals
    first = await service.run_turn("s1", None, "k-1", answers=[(approval["id"], True)])
    again = await service.run_turn("s1", None, "k-1", answers=[(approval["id"], True)])
    assert (again.reply, again.turn, again.replayed) == (first.reply, 2, True)
    assert tools_for_tests.RUNS == [(5, "bob")]


async def test_a_turn_that_fails_after_claiming_never_runs_the_tool_again(make_service, backend):
    model = ScriptedChatClient([TRANSFER, ModelDown("the model fell over after the tool ran"), "Sorry about that."])
    service = make_service(backend, model, agent_tools=TOOLS)
    (approval,) = (await service.run_turn("s1", "pay bob")).approvals
    with pytest.raises(ModelError):
        await service.run_turn("s1", None, answers=[(approval["id"], True)])
    assert tools_for_tests.RUNS == [(5, "bob")]
    stored = (await service.store.read("s1")).document
    assert [a.state for a in stored.approvals] == ["interrupted"]

    with pytest.raises(ApprovalNotPendingError):  # it is not pending any more: its outcome is unknown
        await service.run_turn("s1", None, answers=[(approval["id"], True)])
    result = await service.run_turn("s1", "did it work?")
    assert result.reply == "Sorry about that."
    assert tools_for_tests.RUNS == [(5, "bob")]  # never run again
    assert any(role == "tool" for role, _ in model.requests[-1])  # the model was told the outcome is unknown
    assert (await service.describe("s1"))["pending_approvals"] == []
    assert (await service.store.read("s1")).document.approvals == ()


async def test_compaction_never_archives_a_pending_request_or_splits_a_call_from_its_result(make_service, backend):
    model = ScriptedChatClient(["r0", "r1", "r2", TRANSFER, "done"])
    service = make_service(backend, model, agent_tools=TOOLS, compaction_max_messages=2)  # keeps just 1
    for i in range(3):
        await service.run_turn("s1", f"m{i}")
    (approval,) = (await service.run_turn("s1", "pay bob")).approvals
    live = (await service.store.read("s1")).document.restore().state["in_memory"]["messages"]
    assert any(c.type == "function_approval_request" for m in live for c in m.contents)
    result = await service.run_turn("s1", None, answers=[(approval["id"], True)])
    assert result.reply == "done"
    assert (await service.store.read("s1")).document.transcript  # compaction did archive along the way
    page = await service.messages("s1", cursor=None, limit=200)
    roles = [(m["role"], "tool_calls" in m) for m in page["messages"]]
    call = roles.index(("assistant", True))
    assert page["messages"][call + 2]["role"] == "tool"  # call, its approval answer, then its result
    assert tools_for_tests.RUNS == [(5, "bob")]


# -- usage -------------------------------------------------------------------------------------------------


async def test_usage_is_reported_per_turn_totalled_and_replayed(make_service, backend):
    model = ScriptedChatClient(usage=(10, 3))
    service = make_service(backend, model)
    async with await http(service) as client:
        first = (await client.post(TURN, json={"message": "hi"}, headers={"Idempotency-Key": "k-1"})).json()
        streamed = sse_events(
            (await client.post(TURN, json={"message": "again"}, headers={"Accept": "text/event-stream"})).text
        )
        replay = (await client.post(TURN, json={"message": "hi"}, headers={"Idempotency-Key": "k-1"})).json()
        described = (await client.get("/api/sessions/s1")).json()
    usage = {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13}
    assert first["usage"] == usage
    assert streamed[-1][1]["usage"] == usage
    assert replay["usage"] == usage
    assert described["usage"] == {"input_tokens": 20, "output_tokens": 6, "total_tokens": 26}


async def test_a_model_that_reports_no_usage_gives_null(make_service):
    service = make_service("memory", ScriptedChatClient())
    result = await service.run_turn("s1", "hi")
    assert result.usage is None
    assert (await service.describe("s1"))["usage"] is None


async def test_the_echo_model_reports_a_deterministic_estimate_and_calls_tools():
    from stateful_agent.platform.agent import build_agent
    from stateful_agent.platform.settings import Settings
    from stateful_agent.runtime import build_service

    settings = Settings(backend="memory", agent_tools="samples.tools:TOOLS")
    service = build_service(settings)
    assert build_agent(settings) is not None
    weather = await service.run_turn("s1", 'call get_weather {"city": "Oslo"}')
    assert weather.reply == "[echo, offline] get_weather returned: Oslo: cloudy, 14 °C"
    again = build_service(settings)
    repeat = await again.run_turn("s1", 'call get_weather {"city": "Oslo"}')
    assert weather.usage == repeat.usage
    assert weather.usage is not None
    assert weather.usage.total_tokens == weather.usage.input_tokens + weather.usage.output_tokens


# -- across processes ---------------------------------------------------------------------------------------


def _request_in_new_process(env: dict[str, str], body: dict, script: list) -> dict:
    return run_in_new_process("tests.tool_turn", json.dumps(body), json.dumps(script), env=env)


@pytest.mark.parametrize("backend", DURABLE_BACKENDS)
async def test_an_approval_answered_in_a_new_process_runs_the_tool_there_exactly_once(
    backend, backend_settings, tmp_path
):
    log = tmp_path / "tool.log"
    env = settings_environment(backend, backend_settings(backend)) | {"AGENT_TOOLS": TOOLS, "TOOL_LOG": str(log)}
    transfer = {"call": "transfer", "arguments": {"amount": 7, "to": "carol"}, "text": "Shall I?"}

    asked = _request_in_new_process(env, {"message": "pay carol 7"}, [transfer])
    (approval,) = asked["body"]["approvals"]
    assert not log.exists()

    answer = {"approvals": [{"id": approval["id"], "approved": True}]}
    answered = _request_in_new_process(env, answer, ["Paid carol."])
    assert (answered["status"], answered["body"]["reply"]) == (200, "Paid carol.")
    runs = log.read_text().splitlines()
    assert runs == [f"{answered['pid']} 7 carol"]  # ran once, in the answering process

    repeated = _request_in_new_process(env, answer, ["must not run"])
    assert (repeated["status"], repeated["body"]["code"]) == (409, "approval_not_pending")
    assert log.read_text().splitlines() == runs


async def test_a_replayed_request_for_approval_returns_the_same_approvals(make_service):
    service = make_service("memory", ScriptedChatClient([TRANSFER], usage=(4, 2)), agent_tools=TOOLS)
    first = await service.run_turn("s1", "pay bob", "k-9")
    again = await service.run_turn("s1", "pay bob", "k-9")
    assert again.replayed
    assert again.approvals == first.approvals
    assert len(first.approvals) == 1
    assert again.usage == first.usage
    assert again.reply == "I will transfer."
