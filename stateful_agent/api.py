"""HTTP layer: validate requests, call the turn service, shape responses and errors.

Handlers take a FastAPI ``Request`` (the Functions HTTP-streams model) and return
FastAPI responses. Every failure becomes an RFC 9457 problem document with a
stable ``code``; a stack trace only ever goes to the log. This module imports no
agent or cloud SDK, so indexing the function app stays fast.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from .errors import (
    AgentServiceError,
    InvalidJsonError,
    InvalidRequestError,
    InvalidSessionIdError,
    MessageTooLargeError,
    UnsupportedMediaTypeError,
)
from .idempotency import validate_key
from .runtime import get_service

logger = logging.getLogger(__name__)

SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
PROBLEM_TYPE_PREFIX = "urn:stateful-agent:problem:"
_JSON_MEDIA_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json", re.IGNORECASE)

Handler = Callable[[Request], Awaitable[Response]]


def problem(error: AgentServiceError, instance: str | None = None) -> dict[str, Any]:
    """The RFC 9457 problem document of an error."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_PREFIX + error.code,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
    }
    if instance:
        body["instance"] = instance
    return body


def problem_response(error: AgentServiceError, instance: str | None = None) -> JSONResponse:
    """The ``application/problem+json`` response for an error."""
    return JSONResponse(
        problem(error, instance), status_code=error.status, headers=error.headers, media_type="application/problem+json"
    )


def _problems(handler: Handler) -> Handler:
    """Turn every exception into a problem response; log what the client must not see."""

    @functools.wraps(handler)
    async def wrapper(req: Request) -> Response:
        try:
            return await handler(req)
        except AgentServiceError as error:
            if error.status >= 500:
                logger.error("%s %s failed: %s (%s)", req.method, req.url.path, error.code, error.detail)
            return problem_response(error, req.url.path)
        except Exception:
            logger.exception("Unhandled error in %s %s", req.method, req.url.path)
            return problem_response(AgentServiceError("An unexpected error occurred; it was logged."), req.url.path)

    return wrapper


@_problems
async def post_turn(req: Request) -> Response:
    """``POST /api/sessions/{session_id}/turns`` with ``{"message": "..."}``: run one turn.

    With ``Accept: text/event-stream`` the reply streams as Server-Sent Events. An
    ``Idempotency-Key`` header makes a retry return the stored result instead of a second turn.
    """
    session_id = _session_id(req)
    key = validate_key(req.headers.get("idempotency-key"))
    service = get_service()
    message = await _message(req, service.settings.max_message_bytes)
    if "text/event-stream" not in req.headers.get("accept", "").lower():
        result = await service.run_turn(session_id, message, key)
        return JSONResponse(result.as_json(), headers=_replayed(result))

    from .turns import TurnResult  # loaded with the service already; imported here to keep indexing light

    prepared = await service.prepare(session_id, message, key)  # load errors are plain problem responses
    if isinstance(prepared, TurnResult):  # a replay: the stored result as one done event
        return _sse_response(_single_event("done", prepared.as_json()), _replayed(prepared))
    return _sse_response(_turn_events(service.stream_turn(prepared), req.url.path), {})


@_problems
async def create_session(req: Request) -> Response:
    """``POST /api/sessions``: a new session id; nothing is stored until its first turn."""
    session_id = str(uuid.uuid4())
    location = f"{req.url.path.rstrip('/')}/{session_id}"
    return JSONResponse({"session_id": session_id}, status_code=201, headers={"Location": location})


@_problems
async def get_messages(req: Request) -> Response:
    """``GET /api/sessions/{session_id}/messages?limit=&cursor=``: the whole transcript, paged, oldest first."""
    session_id = _session_id(req)
    raw_limit = req.query_params.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 200:
        raise InvalidRequestError("'limit' must be a number from 1 to 200.")
    page = await get_service().messages(session_id, cursor=req.query_params.get("cursor"), limit=int(raw_limit))
    return JSONResponse(page)


@_problems
async def get_session(req: Request) -> Response:
    """``GET /api/sessions/{session_id}``: summary and messages."""
    return JSONResponse(await get_service().describe(_session_id(req)))


@_problems
async def delete_session(req: Request) -> Response:
    """``DELETE /api/sessions/{session_id}``: 204, also when it did not exist."""
    await get_service().delete(_session_id(req))
    return Response(status_code=204)


@_problems
async def health(req: Request) -> Response:
    """``GET /api/health``: 200 when the store answers, else 503 ``store_unavailable``."""
    return JSONResponse(await get_service().health())


def _replayed(result: Any) -> dict[str, str]:
    return {"Idempotent-Replayed": "true"} if result.replayed else {}


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _sse_response(events: AsyncIterator[str], headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
    )


async def _single_event(event: str, data: dict[str, Any]) -> AsyncIterator[str]:
    yield _sse(event, data)


async def _turn_events(items: AsyncIterator[Any], instance: str) -> AsyncIterator[str]:
    """``delta`` events while the model writes, then ``done`` (stored) or ``error`` (nothing stored)."""
    try:
        async for item in items:
            yield _sse("delta", {"text": item}) if isinstance(item, str) else _sse("done", item.as_json())
    except AgentServiceError as error:
        yield _sse("error", problem(error, instance))
    except Exception:
        logger.exception("Unhandled error while streaming %s", instance)
        yield _sse("error", problem(AgentServiceError("An unexpected error occurred; it was logged."), instance))


def _session_id(req: Request) -> str:
    session_id = str(req.path_params.get("session_id", ""))
    if not SESSION_ID_PATTERN.fullmatch(session_id):
        raise InvalidSessionIdError(
            "A session id is 1-128 characters: letters, digits, '.', '_', ':' and '-', starting with a letter or digit."
        )
    return session_id


async def _message(req: Request, max_bytes: int) -> str:
    """The validated ``message`` of a turn request."""
    content_type = req.headers.get("content-type", "").split(";")[0].strip()
    if not _JSON_MEDIA_TYPE.fullmatch(content_type):
        raise UnsupportedMediaTypeError("Send the turn as JSON with 'Content-Type: application/json'.")
    body = await req.body()
    if len(body) > 6 * max_bytes + 1024:  # even a fully \u-escaped message of max_bytes fits below this
        raise MessageTooLargeError(f"The message exceeds {max_bytes} bytes.")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise InvalidJsonError("The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise InvalidRequestError('The body must be a JSON object: {"message": "<text>"}.')
    unknown = sorted(set(payload) - {"message"})
    if unknown:
        raise InvalidRequestError(f"Unknown field(s): {', '.join(unknown)}.")
    message = payload.get("message")
    if not isinstance(message, str) or not message.strip():
        raise InvalidRequestError("'message' must be a non-empty string.")
    try:
        size = len(message.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidRequestError("'message' contains unpaired surrogate characters.") from None
    if size > max_bytes:
        raise MessageTooLargeError(f"The message exceeds {max_bytes} bytes (MAX_MESSAGE_BYTES).")
    return message
