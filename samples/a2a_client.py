"""Talk to the agent over A2A with the official ``a2a-sdk`` client (``pip install a2a-sdk``):

    python -m samples.a2a_client http://127.0.0.1:7071/api "Hello!" [--context my-chat] [--key <function key>]

It reads the agent card at ``<base>/.well-known/agent-card.json``, sends the message in the conversation
``--context`` (a session id), streams the reply, and when a tool waits for approval asks you on the terminal and
sends the answer as a data part ``{"approvals": [{"id", "approved"}]}`` in the same task.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

import httpx
from a2a.client import ClientConfig, create_client
from a2a.types import a2a_pb2 as pb
from google.protobuf import json_format


def request(text: str | None, context: str, task: str | None = None, approvals: list | None = None):
    parts = [pb.Part(text=text)] if text else []
    if approvals:
        parts.append(json_format.ParseDict({"data": {"approvals": approvals}}, pb.Part()))
    message = pb.Message(message_id=str(uuid.uuid4()), context_id=context, role=pb.ROLE_USER, parts=parts)
    if task:
        message.task_id = task
    return pb.SendMessageRequest(message=message)


async def converse(base: str, text: str, context: str, key: str | None, answer=input) -> str:
    """Send ``text`` and return the final reply, answering approvals with ``answer`` (a prompt function)."""
    headers = {"x-functions-key": key} if key else {}
    config = ClientConfig(streaming=True, httpx_client=httpx.AsyncClient(headers=headers, timeout=300))
    client = await create_client(base, client_config=config)
    reply, sent = "", request(text, context)
    try:
        while True:
            task_id, pending = "", []
            async for event in client.send_message(sent):
                data = json_format.MessageToDict(event)
                if "task" in data:
                    task_id = data["task"]["id"]
                if "artifactUpdate" in data:
                    chunk = data["artifactUpdate"]["artifact"]["parts"][0]["text"]
                    reply += chunk
                    print(chunk, end="", flush=True)
                if "statusUpdate" in data and data["statusUpdate"]["status"]["state"] == "TASK_STATE_INPUT_REQUIRED":
                    parts = data["statusUpdate"]["status"]["message"]["parts"]
                    pending = next(p["data"]["pendingApprovals"] for p in parts if "data" in p)
            if not pending:
                print()
                return reply
            answers = []
            for approval in pending:
                decision = answer(f"\nRun {approval['name']}({approval['arguments']})? [y/N] ")
                answers.append({"id": approval["id"], "approved": decision.strip().lower() == "y"})
            reply, sent = "", request(None, context, task_id, answers)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the agent's base URL, e.g. http://127.0.0.1:7071/api")
    parser.add_argument("message")
    parser.add_argument("--context", default=f"a2a-{uuid.uuid4().hex[:8]}", help="the conversation (session) id")
    parser.add_argument("--key", help="a function key (Azure, without Easy Auth)")
    args = parser.parse_args()
    asyncio.run(converse(args.base, args.message, args.context, args.key))


if __name__ == "__main__":
    main()
