"""HTTP layer: validate requests, call the turn service, shape responses and errors.

Handlers take a FastAPI ``Request`` (the Functions HTTP-streams model) and return
FastAPI responses. Every failure becomes an RFC 9457 problem document with a
stable ``code``; a stack trace only ever goes to the log. This module imports no
agent or cloud SDK, so indexing the function app stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import accumulate
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, format_sse_event
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ..errors import (
    AgentServiceError,
    ChatPageDisabledError,
    InvalidJsonError,
    InvalidRequestError,
    InvalidSessionIdError,
    MessageTooLargeError,
    UnsupportedMediaTypeError,
    printable,
)
from ..platform.identity import Caller, caller
from ..runtime import get_service
from ..state.jsontext import encode_json
from ..turns.idempotency import validate_key

logger = logging.getLogger(__name__)

SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
PROBLEM_TYPE_PREFIX = "urn:stateful-agent:problem:"
#: Deepest JSON nesting a request body may have; a turn needs 1.
MAX_JSON_DEPTH = 32
_JSON_MEDIA_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json", re.IGNORECASE)
_LIMIT = re.compile(r"[0-9]{1,3}")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_TURN_SHAPE = 'Send {"message": "<text>"}, or {"approvals": [{"id": "<id>", "approved": true|false}]}, or both.'
_FALLBACK_PROBLEM = (
    b'{"type":"urn:stateful-agent:problem:internal_error","title":"Internal server error","status":500,'
    b'"detail":"An unexpected error occurred; it was logged.","code":"internal_error"}'
)

Handler = Callable[[Request], Awaitable[Response]]

if TYPE_CHECKING:
    from ..turns.service import TurnService


class ApprovalAnswer(BaseModel):
    """A person's answer to one pending tool approval."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    approved: bool


class TurnRequest(BaseModel):
    """The body of ``POST /api/sessions/{session_id}/turns``: a message, approval answers, or both."""

    model_config = ConfigDict(extra="forbid", strict=True)

    message: str | None = None
    approvals: Annotated[list[ApprovalAnswer], Field(min_length=1, max_length=100)] | None = None


class StrictJSONResponse(JSONResponse):
    """JSON rendered strictly (no ``NaN``) and safely (a lone surrogate becomes its escape, never an error)."""

    def render(self, content: Any) -> bytes:
        return encode_json(content)


def problem(error: AgentServiceError, instance: str | None = None) -> dict[str, Any]:
    """The RFC 9457 problem document of an error."""
    body: dict[str, Any] = {
        **error.extra,
        "type": PROBLEM_TYPE_PREFIX + error.code,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
    }
    if instance:
        body["instance"] = printable(instance, 2048)
    return body


def problem_response(error: AgentServiceError, instance: str | None = None) -> Response:
    """The ``application/problem+json`` response for an error; rendering it never fails."""
    try:
        return StrictJSONResponse(
            problem(error, instance),
            status_code=error.status,
            headers=error.headers,
            media_type="application/problem+json",
        )
    except Exception:
        logger.exception("Could not render the problem document of %s", type(error).__name__)
        return Response(_FALLBACK_PROBLEM, status_code=500, media_type="application/problem+json")


def _problems(route: str) -> Callable[[Handler], Handler]:
    """Serve ``route`` inside a span joined to the request's ``traceparent``; turn every exception into a
    problem response, and log each failed request once (its code, status, session id, and what the client
    must not see; a traceback only for the unexpected)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(req: Request) -> Response:
            from ..platform import telemetry  # with opentelemetry's API: loaded on the first request, not at indexing

            span = telemetry.request_span(route, req.method, req.headers)
            with telemetry.active(span):
                try:
                    response = await handler(req)
                except Exception as exc:
                    error = exc if isinstance(exc, AgentServiceError) else _unexpected(exc)
                    _log_problem(req, error)
                    telemetry.record_problem(span, error.code, error.status, error.unexpected)
                    response = problem_response(error, req.url.path)
            span.set_attribute("http.response.status_code", response.status_code)
            if not getattr(response, "ends_span", False):  # a stream ends the span when it ends
                span.end()
            _warmed_up()
            return response

        return wrapper

    return decorate


_warm = False


def _warmed_up() -> None:
    """After the first request: freeze what startup allocated (later collections skip it) and collect again.

    ``function_app`` turns the garbage collector off while the app imports and serves its first request,
    which a cold start spends mostly allocating.
    """
    global _warm
    if not _warm:
        _warm = True
        gc.freeze()
        gc.enable()


def _unexpected(exc: Exception) -> AgentServiceError:
    return AgentServiceError(
        "An unexpected error occurred; it was logged.", internal=f"{type(exc).__name__}: {exc}", unexpected=exc
    )


def _log_problem(req: Request, error: AgentServiceError, stream: bool = False) -> None:
    """One line per failed request: method, path, status, code, session id and the internal detail."""
    level = logging.ERROR if error.status >= 500 else logging.WARNING
    logger.log(
        level,
        "%s %s%s -> %d %s (session %r)%s",
        req.method,
        req.url.path,
        " (stream)" if stream else "",
        error.status,
        error.code,
        req.path_params.get("session_id"),
        f": {error.internal}" if error.internal else "",
        exc_info=error.unexpected,
    )


@_problems("POST /api/sessions/{session_id}/turns")
async def post_turn(req: Request) -> Response:
    """``POST /api/sessions/{session_id}/turns`` with ``{"message": "..."}`` and/or ``{"approvals": [...]}``.

    With ``Accept: text/event-stream`` the reply streams as Server-Sent Events. An
    ``Idempotency-Key`` header makes a retry return the stored result instead of a second turn.
    """
    from ..platform import telemetry
    from ..turns.service import completed  # loaded with the service already; imported here to keep indexing light

    turn = telemetry.Turn()
    stream = "text/event-stream" in req.headers.get("accept", "").lower()
    try:
        service, owner = _caller(req)
        session_id = _session_id(req)
        turn.identify(session_id, owner)
        key = validate_key(req.headers.get("idempotency-key"))
        message, answers = await _turn_request(req, service.settings.max_message_bytes)
        events = service.turn(session_id, message, key, owner=owner, answers=answers, stream=stream)
        # Errors found before the turn is admitted (input, session, approvals, a lost claim) are plain problems.
        accepted = await anext(events)
        if not stream:
            result = await completed(events)
            turn.done("replayed" if result.replayed else "stored")
            return StrictJSONResponse(result.as_json(), headers=_replayed(result))
    except AgentServiceError as error:
        turn.done(error.code)
        raise
    if accepted.replayed:  # a replay: the stored result's events
        turn.done("replayed")
        return _sse_response(_encoded(events), _replayed(accepted))
    response = _sse_response(
        _with_keepalive(_turn_events(events, req, turn), service.settings.sse_keepalive_seconds), {}
    )
    response.ends_span = True  # type: ignore[attr-defined]  # the stream ends the request's span
    return response


@_problems("POST /api/sessions")
async def create_session(req: Request) -> Response:
    """``POST /api/sessions``: a new session id; nothing is stored until its first turn."""
    _caller(req)
    session_id = str(uuid.uuid4())
    location = f"{req.url.path.rstrip('/')}/{session_id}"
    return StrictJSONResponse({"session_id": session_id}, status_code=201, headers={"Location": location})


@_problems("GET /api/sessions")
async def list_sessions(req: Request) -> Response:
    """``GET /api/sessions?limit=&cursor=``: the caller's sessions, most recently updated first."""
    service, owner = _caller(req)
    limit = _limit(req, default=20, maximum=100)
    return StrictJSONResponse(
        await service.list_sessions(owner=owner, cursor=req.query_params.get("cursor"), limit=limit)
    )


@_problems("GET /api/sessions/{session_id}/messages")
async def get_messages(req: Request) -> Response:
    """``GET /api/sessions/{session_id}/messages?limit=&cursor=``: the whole transcript, paged, oldest first."""
    service, owner = _caller(req)
    session_id = _session_id(req)
    limit = _limit(req, default=50, maximum=200)
    page = await service.messages(session_id, cursor=req.query_params.get("cursor"), limit=limit, owner=owner)
    return StrictJSONResponse(page)


@_problems("GET /api/sessions/{session_id}")
async def get_session(req: Request) -> Response:
    """``GET /api/sessions/{session_id}``: summary and messages."""
    service, owner = _caller(req)
    return StrictJSONResponse(await service.describe(_session_id(req), owner=owner))


@_problems("DELETE /api/sessions/{session_id}")
async def delete_session(req: Request) -> Response:
    """``DELETE /api/sessions/{session_id}``: 204, also when it did not exist (or is another user's)."""
    service, owner = _caller(req)
    await service.delete(_session_id(req), owner=owner)
    return Response(status_code=204)


@_problems("GET /api/me")
async def me(req: Request) -> Response:
    """``GET /api/me``: how the app identifies callers (``auth_mode``) and who this caller is (``user``,
    ``null`` when sessions are shared)."""
    service, who = _identity(req)
    user = {"id": who.principal_id, "provider": who.provider, "name": who.name} if who.provider else None
    return StrictJSONResponse({"auth_mode": service.settings.auth_mode, "user": user})


@_problems("GET /api/ui")
async def chat_page(req: Request) -> Response:
    """``GET /api/ui``: the chat page, a client of this API (404 ``chat_ui_disabled`` with ``CHAT_UI=false``)."""
    if not get_service().settings.chat_ui:
        raise ChatPageDisabledError("The chat page is turned off (CHAT_UI=false).")
    from .chat_page import page

    html, headers = page()
    return Response(html, media_type="text/html; charset=utf-8", headers=headers)


@_problems("GET /api/health")
async def health(req: Request) -> Response:
    """``GET /api/health``: 200 when the store answers, else 503 ``store_unavailable``."""
    return StrictJSONResponse(await get_service().health())


def _replayed(result: Any) -> dict[str, str]:
    return {"Idempotent-Replayed": "true"} if result.replayed else {}


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return format_sse_event(event=event, data_str=encode_json(data, compact=False).decode("utf-8"))


def _sse_response(events: AsyncIterator[bytes], headers: dict[str, str]) -> EventSourceResponse:
    return EventSourceResponse(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})


async def _encoded(events: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """A turn's events as Server-Sent Events: each event's ``kind`` and ``data``."""
    async for event in events:
        yield _sse(event.kind, event.data)


async def _turn_events(events: AsyncIterator[Any], req: Request, turn: Any) -> AsyncIterator[bytes]:
    """``delta``, ``tool_call`` and ``tool_result`` events while the model works, then ``approval`` events and
    ``done`` (stored), or ``error`` (nothing stored). Runs inside the request's span and ends it."""
    from ..turns.events import Completed

    instance = req.url.path
    with turn.streaming():
        try:
            async for event in events:
                if isinstance(event, Completed):
                    turn.done("stored")
                yield _sse(event.kind, event.data)
        except (asyncio.CancelledError, GeneratorExit):
            logger.warning("%s %s (stream) abandoned by the client; nothing was stored", req.method, instance)
            turn.done("abandoned")
            raise
        except Exception as exc:
            error = exc if isinstance(exc, AgentServiceError) else _unexpected(exc)
            _log_problem(req, error, stream=True)
            turn.failed(error)
            yield _sse("error", problem(error, instance))


async def _with_keepalive(events: AsyncIterator[bytes], interval: float) -> AsyncIterator[bytes]:
    """``events``, with an SSE comment whenever they pause for ``interval`` seconds.

    The Functions host drops a proxied stream that stays idle for about 240 s; a model that thinks
    for a long time must not cost the client its reply. ``events`` runs in one task of its own (MAF's
    stream keeps context variables that must be reset where they were set), feeding a short queue.
    Closing this iterator (a client that disconnects) cancels that task, which abandons the turn.
    """
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=8)

    async def produce() -> None:
        async for event in events:
            await queue.put(event)
        await queue.put(None)

    producer = asyncio.create_task(produce())
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, producer}, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                event = getter.result()
                if event is None:
                    return
                yield event
                continue
            getter.cancel()
            if producer in done and queue.empty():
                producer.result()  # the events ended without their end marker: surface why
                return
            if not done:
                yield KEEPALIVE_COMMENT
    finally:
        if not producer.done():
            producer.cancel()
        with contextlib.suppress(BaseException):
            await producer


def _caller(req: Request) -> tuple[TurnService, str]:
    """The service and the owner key of the caller (see ``identity.py``): authentication comes first."""
    service, who = _identity(req)
    return service, who.owner


def _identity(req: Request) -> tuple[TurnService, Caller]:
    service = get_service()
    return service, caller(req.headers, service.settings)


def _limit(req: Request, *, default: int, maximum: int) -> int:
    raw = req.query_params.get("limit", str(default))
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= maximum:
        raise InvalidRequestError(f"'limit' must be a number from 1 to {maximum}.")
    return int(raw)


def _session_id(req: Request) -> str:
    session_id = str(req.path_params.get("session_id", ""))
    if not SESSION_ID_PATTERN.fullmatch(session_id):
        raise InvalidSessionIdError(
            "A session id is 1-128 characters: letters, digits, '.', '_', ':' and '-', starting with a letter or digit."
        )
    return session_id


async def _turn_request(req: Request, max_bytes: int) -> tuple[str | None, list[tuple[str, bool]]]:
    """The validated message and approval answers ``(id, approved)`` of a turn request."""
    content_type = req.headers.get("content-type", "").split(";")[0].strip()
    if not _JSON_MEDIA_TYPE.fullmatch(content_type):
        raise UnsupportedMediaTypeError("Send the turn as JSON with 'Content-Type: application/json'.")
    body = await req.body()
    if len(body) > 6 * max_bytes + 64 * 1024:  # even a fully \u-escaped message of max_bytes fits below this
        raise MessageTooLargeError(f"The message exceeds {max_bytes} bytes.")
    try:
        text = body.decode("utf-8")  # JSON must be UTF-8 (RFC 8259); no sniffing of UTF-16/32
    except UnicodeDecodeError:
        raise InvalidJsonError("The request body is not UTF-8 encoded JSON.") from None
    if _nesting(text) > MAX_JSON_DEPTH:
        raise InvalidJsonError(f"The request body nests JSON deeper than {MAX_JSON_DEPTH} levels.")
    try:
        payload = json.loads(text)
    except ValueError:
        raise InvalidJsonError("The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise InvalidRequestError(_TURN_SHAPE)
    unknown = sorted(set(payload) - set(TurnRequest.model_fields))
    if unknown:
        names = ", ".join(repr(printable(name, 40)) for name in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InvalidRequestError(f"Unknown field(s): {names}{more}. {_TURN_SHAPE}")
    try:
        request = TurnRequest.model_validate(payload)
    except ValidationError as exc:
        if any(error["loc"][:1] == ("approvals",) for error in exc.errors()):
            raise InvalidRequestError(
                '\'approvals\' must be a non-empty list of {"id": "<id>", "approved": true|false}.'
            ) from None
        raise InvalidRequestError("'message' must be a non-empty string.") from None
    if request.message is None and request.approvals is None:
        raise InvalidRequestError(_TURN_SHAPE)
    message = request.message
    if message is not None:
        if not message.strip():
            raise InvalidRequestError("'message' must be a non-empty string.")
        try:
            size = len(message.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidRequestError("'message' contains unpaired surrogate characters.") from None
        if size > max_bytes:
            raise MessageTooLargeError(f"The message exceeds {max_bytes} bytes (MAX_MESSAGE_BYTES).")
    return message, [(answer.id, answer.approved) for answer in request.approvals or ()]


def _nesting(text: str) -> int:
    """How deep JSON text nests arrays and objects (brackets inside strings do not count)."""
    skeleton = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, skeleton)), default=0)
