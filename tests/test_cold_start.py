"""A turn served by a brand-new process sees every earlier turn (file and Cosmos stores)."""

from __future__ import annotations

import pytest

from testkit.support import ScriptedChatClient, run_in_new_process, service_for, settings_environment
from tests.conftest import DURABLE_BACKENDS


def _turn_in_new_process(settings_env: dict[str, str], session_id: str, message: str, *user: str) -> dict:
    return run_in_new_process("tests.one_turn", session_id, message, *user, env=settings_env)


@pytest.mark.parametrize("backend", DURABLE_BACKENDS)
async def test_second_turn_in_a_new_process_sees_the_first(backend, backend_settings):
    settings = backend_settings(backend)
    env = settings_environment(backend, settings)

    first = _turn_in_new_process(env, "cold-1", "My name is Ada.")
    second = _turn_in_new_process(env, "cold-1", "What is my name?")

    assert first["status"] == 200
    assert first["body"]["turn"] == 1
    first_reply = first["body"]["reply"]
    assert second["status"] == 200
    assert second["body"]["turn"] == 2
    assert second["model_requests"] == [
        [["user", "My name is Ada."], ["assistant", first_reply], ["user", "What is my name?"]]
    ]
    assert second["body"]["reply"] != first_reply  # answered by the second process

    # ...and the second turn was stored: read it back through this process's own store.
    service = service_for(settings, ScriptedChatClient())
    try:
        stored = await service.describe("cold-1")
    finally:
        await service.store.close()
    assert [m["text"] for m in stored["messages"]] == [
        "My name is Ada.",
        first_reply,
        "What is my name?",
        second["body"]["reply"],
    ]


@pytest.mark.parametrize("backend", DURABLE_BACKENDS)
async def test_ownership_survives_cold_starts(backend, backend_settings):
    """Alice's and Bob's "demo" stay two sessions across new processes: neither sees the other's turns."""
    env = settings_environment(backend, backend_settings(backend)) | {
        "AUTH_MODE": "easyauth",
        "EASYAUTH_LOCAL_HEADERS": "true",
    }

    alice_1 = _turn_in_new_process(env, "demo", "I am Alice.", "alice")
    bob_1 = _turn_in_new_process(env, "demo", "I am Bob.", "bob")
    alice_2 = _turn_in_new_process(env, "demo", "Who am I?", "alice")

    assert (alice_1["body"]["turn"], bob_1["body"]["turn"], alice_2["body"]["turn"]) == (1, 1, 2)
    assert bob_1["model_requests"] == [[["user", "I am Bob."]]]
    assert alice_2["model_requests"] == [
        [["user", "I am Alice."], ["assistant", alice_1["body"]["reply"]], ["user", "Who am I?"]]
    ]


def test_indexing_the_function_app_loads_no_agent_or_cloud_sdk():
    """The host indexes ``function_app`` on a cold start: the agent, model and store SDKs load on first use."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = (
        "import sys, function_app; "
        "print(sorted(m for m in ('agent_framework', 'openai', 'azure.cosmos', 'psycopg') if m in sys.modules))"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"
