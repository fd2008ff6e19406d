"""Send one turn request in this (fresh) process, as a cold Function instance would, and report it.

    python -m tests.tool_turn BODY_JSON SCRIPT_JSON

Settings come from the environment. The model is the scripted client; SCRIPT_JSON lists its steps:
a reply string, or ``{"call": name, "arguments": {...}, "text": "..."}`` for a tool call. Prints one JSON
object: ``{"status", "body", "pid"}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import httpx

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from stateful_agent.platform.settings import load_settings
from testkit.support import CallTool, ScriptedChatClient


async def main(body: str, script: str) -> None:
    steps = [
        CallTool(step["call"], step["arguments"], step.get("text", "")) if isinstance(step, dict) else step
        for step in json.loads(script)
    ]
    await runtime.install(runtime.build_service(load_settings(), chat_client=ScriptedChatClient(steps)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://cold") as client:
        response = await client.post("/api/sessions/approvals/turns", json=json.loads(body))
    await runtime.install(None)
    print(json.dumps({"status": response.status_code, "body": response.json(), "pid": os.getpid()}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
