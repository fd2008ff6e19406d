"""The agent over the Agent2Agent (A2A) protocol: its agent card and one JSON-RPC route, on the same turn
pipeline and sessions as the other front doors.

A ``contextId`` is a session of the caller (a new one when absent); a turn is a task, ``working`` while it runs,
then ``completed`` with the reply as an artifact, or ``input-required`` with the pending approvals in its status
message. The answer is a message of the same task (or context) with a data part ``{"approvals": [{"id",
"approved"}]}``, which runs each approved tool at most once. A task id names the session, the turn that began
the task and where its reply starts in the transcript, so ``GetTask`` answers from any instance with one point
read. A ``messageId`` is the turn's idempotency key: a retried message never runs twice.

Protocol 1.0 methods (``SendMessage``, ``SendStreamingMessage``, ``GetTask``, ``CancelTask``; proto3 JSON) and
the 0.3 names (``message/send``, ``message/stream``, ``tasks/get``, ``tasks/cancel``; their ``kind`` shapes). The
wire shapes are written here from the specification: ``a2a-sdk``'s types are protobuf code that the Functions
worker's own ``protobuf`` cannot load, so the SDK is the test client, not a runtime dependency.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response

from ..errors import (
    AgentServiceError,
    InvalidJsonError,
    MessageTooLargeError,
    SessionNotFoundError,
    UnsupportedMediaTypeError,
    printable,
)
from ..platform.settings import route_prefix
from ..runtime import get_service
from ..sessions import cursors
from . import sse
from .jsonrpc import INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, RpcError, refused
from .problems import StrictJSONResponse, log_problem, served, unexpected
from .requests import SESSION_ID_PATTERN, body_limit, json_body, service_and_owner

if TYPE_CHECKING:
    from ..sessions.bodies import Message as View

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = "1.0"
# JSON-RPC and A2A error codes (A2A specification, section 8).
TASK_NOT_FOUND, TASK_NOT_CANCELABLE, UNSUPPORTED_OPERATION = -32001, -32002, -32004
_METHODS = {
    "SendMessage": ("send", "1.0"),
    "SendStreamingMessage": ("stream", "1.0"),
    "GetTask": ("get", "1.0"),
    "CancelTask": ("cancel", "1.0"),
    "message/send": ("send", "0.3"),
    "message/stream": ("stream", "0.3"),
    "tasks/get": ("get", "0.3"),
    "tasks/cancel": ("cancel", "0.3"),
}
_STATES_03 = {
    "TASK_STATE_WORKING": "working",
    "TASK_STATE_COMPLETED": "completed",
    "TASK_STATE_INPUT_REQUIRED": "input-required",
    "TASK_STATE_FAILED": "failed",
}


# -- the agent card -------------------------------------------------------------------------------------------


def agent_card(base: str, settings: Any) -> dict[str, Any]:
    """The agent card: who the agent is, where its JSON-RPC interface is, and how callers authenticate."""
    url = f"{base}/a2a"
    if settings.auth_mode == "easyauth":
        schemes = {
            "entra": {
                "httpAuthSecurityScheme": {
                    "scheme": "Bearer",
                    "bearerFormat": "JWT",
                    "description": "A Microsoft Entra ID access token for the app, validated by App Service "
                    "Authentication.",
                }
            }
        }
    else:
        schemes = {
            "functionKey": {
                "apiKeySecurityScheme": {
                    "location": "header",
                    "name": "x-functions-key",
                    "description": "An Azure Functions key of the app.",
                }
            }
        }
    name = next(iter(schemes))
    return {
        "name": settings.agent_name,
        "description": f"The stateful agent '{settings.agent_name}': conversations that survive restarts, with "
        "tools that wait for a person's approval.",
        "version": "1.0.0",
        "supportedInterfaces": [{"url": url, "protocolBinding": "JSONRPC", "protocolVersion": PROTOCOL_VERSION}],
        "capabilities": {"streaming": True, "pushNotifications": False},
        "securitySchemes": schemes,
        "securityRequirements": [{"schemes": {name: {}}}],
        "defaultInputModes": ["text/plain", "application/json"],
        "defaultOutputModes": ["text/plain", "application/json"],
        "skills": [
            {
                "id": "chat",
                "name": "Conversation",
                "description": "Answers in a conversation (contextId) that keeps its history; tools that act on "
                'the world wait for approval, answered with a data part {"approvals": [{"id", "approved"}]}.',
                "tags": ["chat", "stateful", "approvals"],
            }
        ],
    }


@served("GET", ".well-known/agent-card.json")
async def card(req: Request) -> Response:
    """``GET /api/.well-known/agent-card.json``: the public agent card (anonymous: it holds no data). Its URLs
    come from the settings, never from the request's ``Host`` or ``X-Forwarded-*`` headers, so a shared cache
    cannot keep a card that a forged header pointed elsewhere."""
    settings = get_service().settings
    base = settings.published_base()
    if base is None:  # a local host, which knows no host name: the address it listens on (never a header)
        host, port = req.scope.get("server") or ("localhost", None)
        netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
        base = f"http://{netloc}/{route_prefix()}".rstrip("/")
        return StrictJSONResponse(agent_card(base, settings), headers={"Cache-Control": "no-store"})
    return StrictJSONResponse(agent_card(base, settings), headers={"Cache-Control": "public, max-age=300"})


# -- tasks ----------------------------------------------------------------------------------------------------


def task_id(session_id: str, turn: int, first: int, owner: str) -> str:
    """A task id: the session, the turn that began the task, where its reply starts, and a fingerprint of its
    owner (so another caller's task id names no task of theirs)."""
    return cursors.place_id("task-", session_id, (turn, first), cursors.owner_tag("a2a-task", owner))


def parse_task_id(text: Any, owner: str) -> tuple[str, int, int]:
    """The session, starting turn and reply position a task id of ``owner`` names.

    Raises:
        RpcError: It is not a task id of this agent and caller (task not found).
    """
    place = cursors.read_place_id("task-", text, 2, cursors.owner_tag("a2a-task", owner))
    if place is None or not SESSION_ID_PATTERN.fullmatch(place[0]):
        raise RpcError(TASK_NOT_FOUND, f"No task with id {printable(str(text), 80)!r}.")
    session_id, (turn, first) = place
    return session_id, turn, first


def _message(role: str, text: str, context_id: str, task: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    if data is not None:
        parts.append({"data": data})
    return {"messageId": str(uuid.uuid4()), "contextId": context_id, "taskId": task, "role": role, "parts": parts}


def _status(state: str, context_id: str, task: str, approvals: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    from ..state.documents import utc_now

    status: dict[str, Any] = {"state": state, "timestamp": utc_now()}
    if approvals:
        names = ", ".join(f"{a['name']} (id {a['id']})" for a in approvals)
        text = (
            f"Waiting for approval to run: {names}. Answer in this task with a data part "
            '{"approvals": [{"id": "<id>", "approved": true|false}]}.'
        )
        status["message"] = _message("ROLE_AGENT", text, context_id, task, {"pendingApprovals": approvals})
    return status


def _task(task: str, context_id: str, reply: str, approvals: list[dict[str, Any]]) -> dict[str, Any]:
    state = "TASK_STATE_INPUT_REQUIRED" if approvals else "TASK_STATE_COMPLETED"
    body: dict[str, Any] = {"id": task, "contextId": context_id, "status": _status(state, context_id, task, approvals)}
    if reply:
        body["artifacts"] = [{"artifactId": "reply", "name": "reply", "parts": [{"text": reply}]}]
    return body


# -- requests -------------------------------------------------------------------------------------------------


def _parts(message: dict[str, Any]) -> tuple[str | None, list[tuple[str, bool]]]:
    """The text and approval answers of a message (1.0 parts ``{"text"}``/``{"data"}``, or 0.3 ``kind`` parts)."""
    parts = message.get("parts")
    if not isinstance(parts, list) or not parts:
        raise RpcError(INVALID_PARAMS, "'message.parts' must be a non-empty list.")
    texts: list[str] = []
    answers: list[tuple[str, bool]] = []
    for part in parts:
        if not isinstance(part, dict):
            raise RpcError(INVALID_PARAMS, "Each part must be an object.")
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part.get("data"), dict):
            approvals = part["data"].get("approvals")
            if not isinstance(approvals, list) or not approvals:
                raise RpcError(INVALID_PARAMS, 'A data part holds {"approvals": [{"id": "<id>", "approved": bool}]}.')
            for answer in approvals:
                if not (
                    isinstance(answer, dict)
                    and isinstance(answer.get("id"), str)
                    and answer["id"]
                    and isinstance(answer.get("approved"), bool)
                ):
                    raise RpcError(INVALID_PARAMS, 'Each approval is {"id": "<id>", "approved": true|false}.')
                answers.append((answer["id"], answer["approved"]))
        else:
            raise RpcError(-32005, "Only text parts and approval data parts are supported.")
    text = "\n\n".join(texts)
    return (text if text.strip() else None), answers


def _context(value: Any, message_id: str) -> str:
    if value is None or value == "":
        return "ctx-" + hashlib.sha256(message_id.encode()).hexdigest()[:32]  # a retry lands on the same context
    if not isinstance(value, str) or not SESSION_ID_PATTERN.fullmatch(value):
        raise RpcError(INVALID_PARAMS, "A contextId is 1-128 letters, digits, '.', '_', ':' or '-'.")
    return value


# -- the JSON-RPC route ----------------------------------------------------------------------------------------


@served("POST", "a2a", render=refused)
async def a2a(req: Request) -> Response:
    """``POST /api/a2a``: JSON-RPC 2.0 of the A2A protocol (1.0 and 0.3 method names)."""
    service, owner = service_and_owner(req)  # 401 before the protocol
    request_id: Any = None
    try:
        payload = await _payload(req, service.settings.max_message_bytes)
        if (
            not isinstance(payload, dict)
            or payload.get("jsonrpc") != "2.0"
            or not isinstance(payload.get("method"), str)
        ):
            raise RpcError(INVALID_REQUEST, "Not a JSON-RPC 2.0 request.")
        request_id = payload.get("id")
        if request_id is not None and not isinstance(request_id, str | int):
            request_id = None
            raise RpcError(INVALID_REQUEST, "'id' must be a string or a number.")
        method = _METHODS.get(payload["method"])
        if method is None:
            raise RpcError(METHOD_NOT_FOUND, f"Method {printable(payload['method'], 60)!r} is not supported.")
        params = payload.get("params")
        if not isinstance(params, dict):
            raise RpcError(INVALID_PARAMS, "'params' must be an object.")
        action, version = method
        if action == "get":
            found = await _get(service, owner, params)
            return _result(request_id, _v03(found, "task") if version == "0.3" else found)
        if action == "cancel":
            parse_task_id(params.get("id"), owner)
            raise RpcError(TASK_NOT_CANCELABLE, "A turn is not cancelable once it is stored; this task has ended.")
        return await _send(req, service, owner, params, request_id, version, stream=action == "stream")
    except RpcError as error:
        return StrictJSONResponse(error.body(request_id), status_code=error.status)
    except AgentServiceError as error:
        log_problem(req, error)
        return StrictJSONResponse(RpcError.of(error, not_found=TASK_NOT_FOUND).body(request_id))


async def _payload(req: Request, max_message_bytes: int) -> Any:
    """The JSON-RPC request, read with every front door's guards (``requests.json_body``).

    Raises:
        RpcError: A parse error for a body that is not JSON (or nests too deep), with HTTP ``200`` as for any
            JSON-RPC error; an invalid request with ``413`` for a body that is too large and ``415`` for one
            that is not sent as JSON (a cross-site form's ``text/plain`` runs nothing).
    """
    try:
        return await json_body(req, body_limit(max_message_bytes))
    except InvalidJsonError as error:
        raise RpcError(PARSE_ERROR, error.detail, {"code": error.code, "status": error.status}) from None
    except (MessageTooLargeError, UnsupportedMediaTypeError) as error:
        data = {"code": error.code, "status": error.status}
        raise RpcError(INVALID_REQUEST, error.detail, data, status=error.status) from None


async def _send(
    req: Request, service: Any, owner: str, params: dict[str, Any], request_id: Any, version: str, *, stream: bool
) -> Response:
    from ..turns.events import Accepted, ApprovalRequested, Completed, TextDelta
    from ..turns.idempotency import validate_key

    message = params.get("message")
    if not isinstance(message, dict):
        raise RpcError(INVALID_PARAMS, "'message' must be an object.")
    message_id = message.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        raise RpcError(INVALID_PARAMS, "'message.messageId' is required.")
    text, answers = _parts(message)
    if text is None and not answers:
        raise RpcError(INVALID_PARAMS, "The message holds no text and no approval answer.")
    if message.get("taskId"):
        session_id, _, _ = parse_task_id(message["taskId"], owner)
        if message.get("contextId") not in (None, "", session_id):
            raise RpcError(INVALID_PARAMS, "'taskId' belongs to another context.")
        task: str | None = str(message["taskId"])
    else:
        session_id, task = _context(message.get("contextId"), message_id), None
    if text is not None:
        from .requests import checked_message

        text = checked_message(text, service.settings.max_message_bytes)
    key = validate_key(message_id if len(message_id) <= 128 else hashlib.sha256(message_id.encode()).hexdigest())
    events = service.turn(session_id, text, key, owner=owner, answers=answers, stream=stream)
    accepted = await anext(events)
    assert isinstance(accepted, Accepted)
    task = task or task_id(session_id, accepted.turn, accepted.first, owner)
    if not stream:
        reply, approvals = "", []
        async for event in events:
            if isinstance(event, ApprovalRequested):
                approvals.append(event.data)
            elif isinstance(event, Completed):
                reply = event.result.reply
        done = _task(task, session_id, reply, approvals)
        return _result(request_id, _v03(done, "task") if version == "0.3" else {"task": done})

    async def frames() -> AsyncIterator[bytes]:
        approvals: list[dict[str, Any]] = []
        streamed = False
        working = {"id": task, "contextId": session_id, "status": _status("TASK_STATE_WORKING", session_id, task)}
        yield _event(request_id, {"task": working}, version)

        def text_update(text: str) -> bytes:
            artifact = {"artifactId": "reply", "name": "reply", "parts": [{"text": text}]}
            update = {"taskId": task, "contextId": session_id, "artifact": artifact, "append": True}
            return _event(request_id, {"artifactUpdate": update}, version)

        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    streamed = True
                    yield text_update(event.text)
                elif isinstance(event, ApprovalRequested):
                    approvals.append(event.data)
                elif isinstance(event, Completed):
                    if not streamed and event.result.reply:  # a replayed message: its stored reply, whole
                        yield text_update(event.result.reply)
                    state = "TASK_STATE_INPUT_REQUIRED" if approvals else "TASK_STATE_COMPLETED"
                    status = _status(state, session_id, task, approvals)
                    final = {"taskId": task, "contextId": session_id, "status": status}
                    yield _event(request_id, {"statusUpdate": final}, version, final=True)
        except Exception as exc:
            error = exc if isinstance(exc, AgentServiceError) else unexpected(exc)
            log_problem(req, error, stream=True)
            yield sse.frame("error", RpcError.of(error, not_found=TASK_NOT_FOUND).body(request_id))

    return sse.response(sse.with_keepalive(frames(), service.settings.sse_keepalive_seconds), {})


async def _get(service: Any, owner: str, params: dict[str, Any]) -> dict[str, Any]:
    """A task, derived from the stored session: its reply so far and whether it waits for approvals."""
    session_id, started, first = parse_task_id(params.get("id"), owner)
    try:
        view = await service.sessions.slice(session_id, start=first, limit=100, owner=owner)
    except SessionNotFoundError:
        raise RpcError(TASK_NOT_FOUND, f"No task with id {params.get('id')!r}.") from None
    if started > view.turns or first > view.total:
        raise RpcError(TASK_NOT_FOUND, f"No task with id {params.get('id')!r}.")
    reply, open_ended = _task_reply(view.messages)
    approvals = [a.as_json() for a in view.pending_approvals] if open_ended else []
    return _task(str(params["id"]), session_id, reply, approvals)


def _task_reply(messages: list[View]) -> tuple[str, bool]:
    """The last reply of a task (its messages run until the next message with text from the caller), and
    whether the task reaches the end of the transcript (so the session's pending approvals are its own)."""
    reply = ""
    for message in messages:
        if message.role == "user" and message.text:
            return reply, False
        if message.role == "assistant" and message.text:
            reply = message.text
    return reply, True


def _result(request_id: Any, result: dict[str, Any]) -> Response:
    return StrictJSONResponse({"jsonrpc": "2.0", "id": request_id, "result": result})


def _event(request_id: Any, result: dict[str, Any], version: str, final: bool = False) -> bytes:
    if version == "0.3":
        kind, body = next(iter(result.items()))
        converted = _v03(
            body, {"task": "task", "statusUpdate": "status-update", "artifactUpdate": "artifact-update"}[kind]
        )
        if kind == "statusUpdate":
            converted["final"] = final
        result = converted
    return sse.frame("message", {"jsonrpc": "2.0", "id": request_id, "result": result})


def _v03(value: Any, kind: str | None = None) -> Any:
    """A 1.0 shape in the 0.3 protocol's: ``kind`` discriminators, lower-case states and roles."""
    if isinstance(value, list):
        return [_v03(item) for item in value]
    if not isinstance(value, dict):
        return value
    converted: dict[str, Any] = {}
    for key, item in value.items():
        if key == "state":
            converted[key] = _STATES_03.get(item, item)
        elif key == "role":
            converted[key] = "agent" if item == "ROLE_AGENT" else "user"
        elif key == "parts":
            converted[key] = [
                {"kind": "text", "text": p["text"]} if "text" in p else {"kind": "data", "data": p.get("data")}
                for p in item
            ]
        elif key == "message" and isinstance(item, dict):
            converted[key] = {**_v03(item), "kind": "message"}
        else:
            converted[key] = _v03(item)
    if kind:
        converted["kind"] = kind
    return converted
