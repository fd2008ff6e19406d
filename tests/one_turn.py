"""Run one turn in this (fresh) process, as a cold Function instance would, and report it.

    python -m tests.one_turn SESSION_ID MESSAGE [USER]

Settings come from the environment. With USER, the request carries the identity headers Easy Auth
would inject for principal USER of provider ``aad``. The model is the scripted client, so the
parent test can see exactly what the model was sent. Prints one JSON object:
``{"status", "body", "model_requests"}``.
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
from testkit.support import ScriptedChatClient


async def main(session_id: str, message: str, user: str | None = None) -> None:
    model = ScriptedChatClient([f"reply from process {os.getpid()}"])
    await runtime.install(runtime.build_service(load_settings(), chat_client=model))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://cold") as client:
        headers = {"X-MS-CLIENT-PRINCIPAL-ID": user, "X-MS-CLIENT-PRINCIPAL-IDP": "aad"} if user else {}
        response = await client.post(f"/api/sessions/{session_id}/turns", json={"message": message}, headers=headers)
    await runtime.install(None)
    print(json.dumps({"status": response.status_code, "body": response.json(), "model_requests": model.requests}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
