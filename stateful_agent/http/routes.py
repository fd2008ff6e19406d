"""HTTP routes: each handler reads its request (``requests``), calls the service, and shapes its response;
failures become problem documents (``problems``), streamed turns Server-Sent Events (``sse``).

Handlers take a FastAPI ``Request`` (the Functions HTTP-streams model) and return FastAPI responses. This
module imports no agent or cloud SDK, so indexing the function app stays fast.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response

from ..errors import AgentServiceError, ChatPageDisabledError
from ..platform.identity import Caller, caller
from ..runtime import get_service
from ..turns.idempotency import validate_key
from . import requests, sse
from .problems import StrictJSONResponse, problem_response, served

if TYPE_CHECKING:
    from ..turns.service import TurnService

logger = logging.getLogger(__name__)


@served("POST", "sessions/{session_id}/turns")
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
        service, owner = requests.service_and_owner(req)
        session_id = requests.session_id(req)
        turn.identify(session_id, owner)
        key = validate_key(req.headers.get("idempotency-key"))
        message, answers = await requests.turn_request(req, service.settings.max_message_bytes)
        bearer = requests.bearer(req) if service.tool_servers is not None else None
        events = service.turn(session_id, message, key, owner=owner, answers=answers, stream=stream, bearer=bearer)
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
        return sse.response(sse.encoded(events), _replayed(accepted))
    response = sse.response(sse.with_keepalive(sse.live(events, req, turn), service.settings.sse_keepalive_seconds), {})
    response.ends_span = True  # type: ignore[attr-defined]  # the stream ends the request's span
    return response


@served("POST", "sessions")
async def create_session(req: Request) -> Response:
    """``POST /api/sessions``: a new session id; nothing is stored until its first turn."""
    from ..sessions.bodies import Created

    requests.service_and_owner(req)
    session_id = str(uuid.uuid4())
    location = f"{req.url.path.rstrip('/')}/{session_id}"
    return StrictJSONResponse(Created(session_id=session_id), status_code=201, headers={"Location": location})


@served("GET", "sessions")
async def list_sessions(req: Request) -> Response:
    """``GET /api/sessions?limit=&cursor=``: the caller's sessions, most recently updated first."""
    service, owner = requests.service_and_owner(req)
    limit = requests.limit(req, default=20, maximum=100)
    return StrictJSONResponse(
        await service.list_sessions(owner=owner, cursor=req.query_params.get("cursor"), limit=limit)
    )


@served("GET", "sessions/{session_id}/messages")
async def get_messages(req: Request) -> Response:
    """``GET /api/sessions/{session_id}/messages?limit=&cursor=``: the whole transcript, paged, oldest first."""
    service, owner = requests.service_and_owner(req)
    session_id = requests.session_id(req)
    limit = requests.limit(req, default=50, maximum=200)
    page = await service.messages(session_id, cursor=req.query_params.get("cursor"), limit=limit, owner=owner)
    return StrictJSONResponse(page)


@served("GET", "sessions/{session_id}")
async def get_session(req: Request) -> Response:
    """``GET /api/sessions/{session_id}``: summary and messages."""
    service, owner = requests.service_and_owner(req)
    return StrictJSONResponse(await service.describe(requests.session_id(req), owner=owner))


@served("DELETE", "sessions/{session_id}")
async def delete_session(req: Request) -> Response:
    """``DELETE /api/sessions/{session_id}``: 204, also when it did not exist (or is another user's)."""
    service, owner = requests.service_and_owner(req)
    await service.delete(requests.session_id(req), owner=owner)
    return Response(status_code=204)


@served("GET", "me")
async def me(req: Request) -> Response:
    """``GET /api/me``: how the app identifies callers (``auth_mode``), who this caller is (``user``, ``null``
    when sessions are shared), and where sessions live and which model answers (``backend``, ``model``)."""
    from ..sessions.bodies import Me, User

    service, who = _identity(req)
    user = User(id=who.principal_id, provider=who.provider, name=who.name) if who.provider else None
    settings = service.settings
    body = Me(auth_mode=settings.auth_mode, user=user, backend=settings.backend, model=settings.model_label)
    return StrictJSONResponse(body)


@served("GET", "ui")
async def chat_page(req: Request) -> Response:
    """``GET /api/ui``: the chat page, a client of this API (404 ``chat_ui_disabled`` with ``CHAT_UI=false``)."""
    if not get_service().settings.chat_ui:
        raise ChatPageDisabledError("The chat page is turned off (CHAT_UI=false).")
    from .chat_page import page

    html, headers = page()
    return Response(html, media_type="text/html; charset=utf-8", headers=headers)


def _anonymous(error: AgentServiceError, instance: str) -> Response:
    """A problem for an anonymous caller: the status and code only; the detail (which may name settings and their
    values) goes to the log."""
    logger.warning("GET /health -> %d %s: %s", error.status, error.code, error.detail)
    return problem_response(error, instance, detail=False)


@served("GET", "health", render=_anonymous)
async def health(req: Request) -> Response:
    """``GET /api/health`` (anonymous): ``{"status": "ok"}`` when the store answers, else ``503
    store_unavailable`` (or ``configuration_error``), with the status and code only."""
    return StrictJSONResponse(await get_service().health())


def _replayed(result: Any) -> dict[str, str]:
    return {"Idempotent-Replayed": "true"} if result.replayed else {}


def _identity(req: Request) -> tuple[TurnService, Caller]:
    service = get_service()
    return service, caller(req.headers, service.settings)
