"""The agent as an MCP server: one tool, ``ask``, over streamable HTTP (stateless, JSON responses), on the same
turn pipeline and sessions as the other front doors.

``ask`` takes ``message``, an optional ``conversation`` key and ``approvals`` (answers to pending tool
approvals). The caller's identity and the key name the session (``mcp-<key>``, with a hash of the function key
when function keys are the identity, so two keys do not continue each other's conversations by accident; with
``AUTH_MODE=none`` every key holder is the same owner and can reach every session on every door). The result is
the reply text; a turn that waits for approvals says so, lists them, and returns at once: the answer is a second
call.

The official ``mcp`` SDK serves the protocol (its low-level ``Server`` and stateless session manager, run once
per process and event loop); this module bridges one Functions request to it and back.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import re
from typing import Any

from fastapi import Request, Response

from ..errors import AgentServiceError, InvalidRequestError
from ..platform.identity import caller
from ..runtime import get_service
from .jsonrpc import refused
from .problems import served, unexpected
from .requests import body as read_body
from .requests import body_limit

logger = logging.getLogger(__name__)

TOOL = "ask"
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_SCHEMA = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "description": "What to ask or tell the agent."},
        "conversation": {
            "type": "string",
            "description": "A name for the conversation (1-64 letters, digits, '.', '_', ':' or '-'); the same name "
            "continues it. Default: 'default'.",
        },
        "approvals": {
            "type": "array",
            "description": "Answers to the tool calls the agent asked approval for, by their id.",
            "items": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "approved": {"type": "boolean"}},
                "required": ["id", "approved"],
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}


class Endpoint:
    """The MCP server and its stateless session manager, started once per event loop."""

    def __init__(self) -> None:
        from mcp.server.lowlevel import Server
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        server = Server("stateful-agent", on_list_tools=self._list_tools, on_call_tool=self._call_tool)
        self.manager = StreamableHTTPSessionManager(server, stateless=True, json_response=True)
        self.loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is not None:
            return
        started = asyncio.Event()

        async def run() -> None:
            async with self.manager.run():
                started.set()
                await asyncio.Event().wait()

        # The long-lived manager must not keep this first request's context (its span); each call runs in the
        # context of the request that carries it (the manager starts its task from there).
        self._task = asyncio.create_task(run(), context=contextvars.Context())
        await started.wait()

    async def _list_tools(self, ctx: Any, params: Any) -> Any:
        from mcp import types

        name = get_service().settings.agent_name
        description = (
            f"Ask the agent '{name}'. Name a conversation to continue it. When the agent wants to run a tool that "
            "needs a person's approval, the result lists the pending approvals: call again with 'approvals'."
        )
        return types.ListToolsResult(tools=[types.Tool(name=TOOL, description=description, input_schema=_SCHEMA)])

    async def _call_tool(self, ctx: Any, params: Any) -> Any:
        from mcp import types

        if params.name != TOOL:
            return _error_result(f"Unknown tool {params.name!r}: this server has one tool, '{TOOL}'.")
        try:
            text, data = await ask(ctx.request, dict(params.arguments or {}))
        except AgentServiceError as error:
            return _error_result(f"{error.code}: {error.detail}")
        except Exception as exc:  # never a stack trace to the caller
            error = unexpected(exc)
            logger.error("MCP ask failed: %s", error.internal, exc_info=exc)
            return _error_result(f"{error.code}: {error.detail}")
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=data)


_endpoints: dict[int, Endpoint] = {}


async def endpoint() -> Endpoint:
    """The process's MCP endpoint on the running event loop (started on first use)."""
    loop = asyncio.get_running_loop()
    current = _endpoints.get(id(loop))
    if current is None or current.loop is not loop:
        current = _endpoints[id(loop)] = Endpoint()
    await current.start()
    return current


async def ask(request: Any, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Run one turn for ``ask``: the reply text and the structured result (``reply``, ``conversation``,
    ``pending_approvals``).

    Raises:
        InvalidRequestError: The arguments are not the tool's.
        The errors of ``TurnService.turn``.
    """
    from ..turns.service import completed
    from .requests import checked_message

    service = get_service()
    who = caller(request.headers, service.settings)
    unknown = set(arguments) - {"message", "conversation", "approvals"}
    if unknown:
        raise InvalidRequestError(f"Unknown argument(s): {', '.join(sorted(unknown))}.")
    conversation = arguments.get("conversation") or "default"
    if not isinstance(conversation, str) or not _KEY.fullmatch(conversation):
        raise InvalidRequestError("'conversation' is 1-64 letters, digits, '.', '_', ':' or '-'.")
    message = arguments.get("message")
    if message is not None and not isinstance(message, str):
        raise InvalidRequestError("'message' must be a string.")
    answers = _answers(arguments.get("approvals"))
    if message is None and not answers:
        raise InvalidRequestError("Send a 'message', or 'approvals' to answer pending approvals.")
    if message is not None:
        message = checked_message(message, service.settings.max_message_bytes)
    session_id = session_for(conversation, request.headers.get("x-functions-key") or request.query_params.get("code"))
    events = service.turn(session_id, message, owner=who.owner, answers=answers)
    result = await completed(events)
    data = {"reply": result.reply, "conversation": conversation, "pending_approvals": list(result.approvals)}
    if not result.approvals:
        return result.reply, data
    waiting = "; ".join(
        f"{a['name']}({json.dumps(a['arguments'], ensure_ascii=False)}) with id {a['id']!r}" for a in result.approvals
    )
    text = (f"{result.reply}\n\n" if result.reply else "") + (
        f"The agent is waiting for approval to run: {waiting}. Call '{TOOL}' again with the same conversation and "
        '"approvals": [{"id": "<id>", "approved": true or false}] for each of them.'
    )
    return text, data


def session_for(conversation: str, key: str | None) -> str:
    """The session a conversation key names: with function keys as the identity, a hash of the key presented
    (``x-functions-key`` or ``?code=``) keeps two key holders apart (Easy Auth users are apart by owner)."""
    if key:
        return f"mcp-{hashlib.sha256(key.encode()).hexdigest()[:12]}-{conversation}"
    return f"mcp-{conversation}"


def _answers(value: Any) -> list[tuple[str, bool]]:
    if value is None:
        return []
    if not isinstance(value, list) or not value or len(value) > 100:
        raise InvalidRequestError('\'approvals\' must be a non-empty list of {"id", "approved"}.')
    answers = []
    for answer in value:
        if (
            not isinstance(answer, dict)
            or set(answer) != {"id", "approved"}
            or not isinstance(answer["id"], str)
            or not answer["id"]
            or not isinstance(answer["approved"], bool)
        ):
            raise InvalidRequestError('Each approval is {"id": "<id>", "approved": true or false}.')
        answers.append((answer["id"], answer["approved"]))
    return answers


def _error_result(text: str) -> Any:
    from mcp import types

    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


@served("POST", "mcp", render=refused)
async def mcp(req: Request) -> Response:
    """``POST /api/mcp``: the MCP endpoint (streamable HTTP, stateless). The caller is identified (and refused
    with ``401`` when it is not) and the body's size checked (``413``) before any MCP message is read; the SDK
    checks the media type and parses the message."""
    service = get_service()
    caller(req.headers, service.settings)  # UnauthenticatedError: 401 before the protocol
    body = await read_body(req, body_limit(service.settings.max_message_bytes))  # 413 before the protocol
    return await _bridge(await endpoint(), req, body)


async def _bridge(target: Endpoint, req: Request, body: bytes) -> Response:
    """Hand the request to the MCP session manager as an ASGI call and collect its (JSON) response."""
    scope = dict(req.scope)
    scope.setdefault("type", "http")
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the answer is prepared
        return {"type": "http.disconnect"}

    status, headers, chunks = 500, [], []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], message.get("headers", [])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await target.manager.handle_request(scope, receive, send)
    response = Response(content=b"".join(chunks), status_code=status)
    for name, value in headers:
        if name.lower() not in (b"content-length",):
            response.headers.append(name.decode("latin-1"), value.decode("latin-1"))
    return response
