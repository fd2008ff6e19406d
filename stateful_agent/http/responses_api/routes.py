"""The Responses API's routes: each maps its request to ``TurnService.turn`` or the read side, and the turn's
events to Responses objects and stream events. No orchestration and no store access of its own.

Handlers take a FastAPI ``Request`` (the Functions HTTP-streams model); errors are OpenAI error objects.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response

from ...errors import (
    AgentServiceError,
    IdempotencyKeyReusedError,
    ItemNotFoundError,
    MethodNotAllowedError,
    ResponseNotFoundError,
    SessionConflictError,
    SessionNotFoundError,
    UnsupportedParameterError,
)
from ...turns.idempotency import validate_key
from .. import requests as http_requests
from .. import sse
from ..problems import StrictJSONResponse, served
from . import requests, shapes
from .errors import error_response

if TYPE_CHECKING:
    from ...turns.service import TurnService

logger = logging.getLogger(__name__)
_SHAPE = 'Send {"model": "...", "input": "<text>" | [items]}, optionally with "conversation" or "previous_response_id".'


@served("POST", "v1/responses", render=error_response)
async def create_response(req: Request) -> Response:
    """``POST /v1/responses``: one turn of a conversation, as a response object or (``stream: true``) its
    stream events. An ``Idempotency-Key`` header makes a retry return the first result."""
    from ...platform import telemetry
    from .stream import ResponseBuilder

    turn = telemetry.Turn()
    try:
        service, owner = http_requests.service_and_owner(req)
        key = validate_key(req.headers.get("idempotency-key"))
        settings = service.settings
        body = await http_requests.json_object(req, settings.max_message_bytes, _SHAPE)
        request = requests.create_response(body, settings.max_message_bytes, key, owner)
        turn.identify(request.session_id, owner)
        events = service.turn(
            request.session_id,
            request.message,
            key,
            owner=owner,
            answers=request.answers,
            stream=True,  # a response that does not stream is built from the same events
            bearer=http_requests.bearer(req) if service.tool_servers is not None else None,
            after_turn=request.previous.turn if request.previous else None,
        )
        try:
            accepted = await anext(events)
        except SessionNotFoundError:
            if request.previous is None:
                raise
            raise ResponseNotFoundError(
                f"No response with id '{request.previous.id}'.", extra={"param": "previous_response_id"}
            ) from None
        builder = ResponseBuilder(request, settings.model_label, settings.agent_name)
        started = builder.start(accepted)
        if accepted.replayed:
            replay = await _replay(service, owner, builder, events)
            turn.done("replayed")
            if not request.stream:
                return StrictJSONResponse(builder.response(), headers={"Idempotent-Replayed": "true"})
            frames = [*started, *replay]
            return sse.response(_frames(frames), {"Idempotent-Replayed": "true"})
        if not request.stream:
            async for event in events:
                builder.feed(event)
            turn.done("stored")
            return StrictJSONResponse(builder.response())
    except AgentServiceError as error:
        turn.done(error.code)
        raise
    live = _live(events, builder, started, req, turn)
    response = sse.response(sse.with_keepalive(live, settings.sse_keepalive_seconds), {})
    response.ends_span = True  # type: ignore[attr-defined]  # the stream ends the request's span
    return response


@served("GET", "v1/responses/{response_id}", render=error_response)
async def get_response(req: Request) -> Response:
    """``GET /v1/responses/{response_id}``: the stored turn a response id names (its output items; usage is
    reported only when the response is made)."""
    service, owner = http_requests.service_and_owner(req)
    ref = requests.parse_response_id(str(req.path_params.get("response_id", "")), owner)
    try:
        view = await service.sessions.slice(ref.session_id, start=ref.first, limit=shapes.PAGE_MESSAGES, owner=owner)
    except SessionNotFoundError:
        raise ResponseNotFoundError(f"No response with id '{ref.id}'.") from None
    if ref.turn > view.turns or ref.first > view.total:
        raise ResponseNotFoundError(f"No response with id '{ref.id}'.")
    label = service.settings.agent_name
    output = shapes.turn_output(view.messages, ref.turn, label)
    if ref.turn == view.turns:
        output += [shapes.approval_request(approval, label) for approval in view.pending_approvals]
    body = shapes.response(ref, status="completed", model=service.settings.model_label, output=output, completed=True)
    return StrictJSONResponse(body)


@served("GET", "v1/responses/{response_id}/input_items", render=error_response)
async def list_input_items(req: Request) -> Response:
    """``GET /v1/responses/{response_id}/input_items?after=&limit=&order=``: what the request that made the
    response sent: its user message and approval answers."""
    service, owner = http_requests.service_and_owner(req)
    ref = requests.parse_response_id(str(req.path_params.get("response_id", "")), owner)
    _, limit, order = requests.list_query(req.query_params)
    start = max(ref.first - shapes.INPUT_MESSAGES, 0)
    try:
        view = await service.sessions.slice(ref.session_id, start=start, limit=ref.first - start, owner=owner)
    except SessionNotFoundError:
        raise ResponseNotFoundError(f"No response with id '{ref.id}'.") from None
    if ref.turn > view.turns or ref.first > view.total:
        raise ResponseNotFoundError(f"No response with id '{ref.id}'.")
    items = [item for _, item in shapes.conversation_items(shapes.turn_inputs(view.messages), "")]
    if order == "desc":
        items.reverse()
    page, more = shapes.item_page(items, req.query_params.get("after"), limit)
    return StrictJSONResponse(shapes.item_list(page, more))


@served("DELETE", "v1/responses/{response_id}", render=error_response)
async def delete_response(req: Request) -> Response:
    """``DELETE /v1/responses/{response_id}``: refused; a response is a turn of its conversation."""
    _, owner = http_requests.service_and_owner(req)
    requests.parse_response_id(str(req.path_params.get("response_id", "")), owner)
    raise MethodNotAllowedError(
        "A response is a turn of its conversation and cannot be deleted alone; delete the conversation "
        "(DELETE /v1/conversations/{id})."
    )


@served("POST", "v1/conversations", render=error_response)
async def create_conversation(req: Request) -> Response:
    """``POST /v1/conversations``: a new conversation, stored at once with its ``metadata`` and initial
    ``items`` (user and assistant messages); its first response continues it. An ``Idempotency-Key`` makes a
    retry return the same conversation."""
    service, owner = http_requests.service_and_owner(req)
    key = validate_key(req.headers.get("idempotency-key"))
    messages: list[tuple[str, str]] = []
    metadata: dict[str, str] = {}
    if req.headers.get("content-length") not in (None, "0") or "transfer-encoding" in req.headers:
        body = await http_requests.json_object(req, service.settings.max_message_bytes, "Send a JSON object.")
        messages, metadata = requests.create_conversation(body, service.settings.max_message_bytes)
    session_id = requests.new_conversation_id(f"conversation:{key}" if key else None)
    try:
        document = await service.start(session_id, owner=owner, messages=messages, metadata=metadata)
    except SessionConflictError:
        if not key:
            raise
        view = await service.sessions.slice(session_id, start=0, limit=len(messages), owner=owner)  # the first's
        if view.metadata != metadata or [(m.role, m.text) for m in view.messages] != messages:
            raise IdempotencyKeyReusedError(
                "This Idempotency-Key created another conversation; use a new key for a new conversation."
            ) from None
        return StrictJSONResponse(shapes.conversation(session_id, view.created_at, view.metadata))
    return StrictJSONResponse(shapes.conversation(session_id, document.created_at, metadata))


@served("GET", "v1/conversations/{conversation_id}", render=error_response)
async def get_conversation(req: Request) -> Response:
    """``GET /v1/conversations/{conversation_id}``: the conversation, with its metadata."""
    service, owner = http_requests.service_and_owner(req)
    session_id = _conversation_id(req)
    view = await service.sessions.slice(session_id, start=0, limit=0, owner=owner)
    return StrictJSONResponse(shapes.conversation(session_id, view.created_at, view.metadata))


@served("POST", "v1/conversations/{conversation_id}", render=error_response)
async def update_conversation(req: Request) -> Response:
    """``POST /v1/conversations/{conversation_id}`` with ``{"metadata": {...}}``: replaces its metadata."""
    service, owner = http_requests.service_and_owner(req)
    session_id = _conversation_id(req)
    body = await http_requests.json_object(req, service.settings.max_message_bytes, 'Send {"metadata": {...}}.')
    document = await service.set_metadata(session_id, requests.update_conversation(body), owner=owner)
    return StrictJSONResponse(shapes.conversation(session_id, document.created_at, document.metadata))


@served("DELETE", "v1/conversations/{conversation_id}", render=error_response)
async def delete_conversation(req: Request) -> Response:
    """``DELETE /v1/conversations/{conversation_id}``: deletes the session and its transcript."""
    service, owner = http_requests.service_and_owner(req)
    session_id = _conversation_id(req)
    await service.delete(session_id, owner=owner)
    return StrictJSONResponse({"id": session_id, "object": "conversation.deleted", "deleted": True})


@served("GET", "v1/conversations/{conversation_id}/items", render=error_response)
async def list_items(req: Request) -> Response:
    """``GET /v1/conversations/{conversation_id}/items?after=&limit=&order=``: the conversation's items."""
    service, owner = http_requests.service_and_owner(req)
    session_id = _conversation_id(req)
    after_index, limit, order = requests.list_query(req.query_params)
    after = req.query_params.get("after")
    label, size = service.settings.agent_name, shapes.PAGE_MESSAGES
    if order == "asc":
        start = after_index or 0
        view = await service.sessions.slice(session_id, start=start, limit=size + 1, owner=owner)
        end = start + size
        items = [item for index, item in shapes.conversation_items(view.messages, label) if index < end]
        page, more = shapes.item_page(items, after, limit)
        more = more or (end < view.total and len(page) < limit)
    else:
        if after_index is None:
            view = await service.sessions.slice(session_id, start=-size, limit=size, owner=owner)
            low = view.total - len(view.messages)
        else:
            low = max(after_index + 1 - size, 0)
            view = await service.sessions.slice(session_id, start=low, limit=after_index + 2 - low, owner=owner)
        high = low + size if after_index is None else after_index + 1
        items = [item for index, item in reversed(shapes.conversation_items(view.messages, label)) if index < high]
        page, more = shapes.item_page(items, after, limit)
        more = more or (low > 0 and len(page) < limit)
    return StrictJSONResponse(shapes.item_list(page, more))


@served("POST", "v1/conversations/{conversation_id}/items", render=error_response)
async def add_items(req: Request) -> Response:
    """``POST /v1/conversations/{conversation_id}/items``: adds user and assistant messages to the end of the
    conversation without a response (the next response's model sees them); answers the items it added."""
    service, owner = http_requests.service_and_owner(req)
    session_id = _conversation_id(req)
    body = await http_requests.json_object(req, service.settings.max_message_bytes, 'Send {"items": [...]}.')
    messages = requests.add_items(body, service.settings.max_message_bytes)
    first = await service.append(session_id, messages, owner=owner)
    added = [shapes.message_item(f"msg_{first + i}", text, role=role) for i, (role, text) in enumerate(messages)]
    return StrictJSONResponse(shapes.item_list(added, False))


@served("GET", "v1/conversations/{conversation_id}/items/{item_id}", render=error_response)
async def get_item(req: Request) -> Response:
    """``GET /v1/conversations/{conversation_id}/items/{item_id}``: one item of the conversation."""
    service, owner = http_requests.service_and_owner(req)
    session_id = _conversation_id(req)
    item_id = str(req.path_params.get("item_id", ""))
    missing = ItemNotFoundError(f"No item with id '{item_id}' in this conversation.", extra={"param": "item_id"})
    try:
        index = requests.item_index(item_id)
    except UnsupportedParameterError:
        raise missing from None
    view = await service.sessions.slice(session_id, start=index, limit=2, owner=owner)  # a call and its result
    label = service.settings.agent_name
    found = next((item for _, item in shapes.conversation_items(view.messages, label) if item["id"] == item_id), None)
    if found is None:
        raise missing
    return StrictJSONResponse(found)


async def _replay(service: TurnService, owner: str, builder: Any, events: AsyncIterator[Any]) -> list[dict[str, Any]]:
    """The first response's output again (read from the transcript), for a repeated ``Idempotency-Key``."""
    rest = [event async for event in events]  # the stored turn's waiting approvals and its result
    assert builder.ref is not None
    view = await service.sessions.slice(
        builder.ref.session_id, start=builder.ref.first, limit=shapes.PAGE_MESSAGES, owner=owner
    )
    frames = builder.items(shapes.turn_output(view.messages, builder.ref.turn, builder.label))
    for event in rest:
        frames += builder.feed(event)
    return frames


async def _frames(frames: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    for frame in frames:
        yield sse.frame(frame["type"], frame)


async def _live(
    events: AsyncIterator[Any], builder: Any, started: list[dict[str, Any]], req: Request, turn: Any
) -> AsyncIterator[bytes]:
    """The stream events of a live turn; a failure after it began is ``error`` and ``response.failed``."""
    for frame in started:
        yield sse.frame(frame["type"], frame)
    encoded = sse.live(
        events,
        req,
        turn,
        encode=lambda event: [sse.frame(f["type"], f) for f in builder.feed(event)],
        failure=lambda error: [sse.frame(f["type"], f) for f in builder.fail(error)],
    )
    async for frame in encoded:
        yield frame


def _conversation_id(req: Request) -> str:
    return requests.conversation_id(str(req.path_params.get("conversation_id", "")))
