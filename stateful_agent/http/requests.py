"""Request parsing: every JSON body (media type, size, depth, in linear time), the turn body (strict, typed),
path and query parameters; every bad input is an ``AgentServiceError`` with its own code, never a stack trace."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.requests import ClientDisconnect

from ..errors import (
    InvalidJsonError,
    InvalidRequestError,
    InvalidSessionIdError,
    MessageTooLargeError,
    UnsupportedMediaTypeError,
    printable,
)
from ..state.jsontext import TooDeepError, decode_json

if TYPE_CHECKING:
    from ..turns.service import TurnService

SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: Deepest JSON nesting a request body may have; a turn needs 1.
MAX_JSON_DEPTH = 32
_JSON_MEDIA_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json", re.IGNORECASE)
_LIMIT = re.compile(r"[0-9]{1,3}")
_TURN_SHAPE = 'Send {"message": "<text>"}, or {"approvals": [{"id": "<id>", "approved": true|false}]}, or both.'


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


def limit(req: Request, *, default: int, maximum: int) -> int:
    raw = req.query_params.get("limit", str(default))
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= maximum:
        raise InvalidRequestError(f"'limit' must be a number from 1 to {maximum}.")
    return int(raw)


def session_id(req: Request, parameter: str = "session_id") -> str:
    """The session id in the path (``parameter``).

    Raises:
        InvalidSessionIdError: It is not a valid session id.
    """
    return valid_session_id(str(req.path_params.get(parameter, "")))


def valid_session_id(session_id: str) -> str:
    """``session_id`` if it is a valid session id.

    Raises:
        InvalidSessionIdError: It is not.
    """
    if not SESSION_ID_PATTERN.fullmatch(session_id):
        raise InvalidSessionIdError(
            "A session id is 1-128 characters: letters, digits, '.', '_', ':' and '-', starting with a letter or digit."
        )
    return session_id


def body_limit(max_message_bytes: int) -> int:
    """The largest request body a route that carries one message of ``max_message_bytes`` reads: even a fully
    ``\\u``-escaped message fits below it, with room for the rest of the request."""
    return 6 * max_message_bytes + 64 * 1024


async def body(req: Request, max_body_bytes: int) -> bytes:
    """The request's body, read up to ``max_body_bytes``: a larger one is refused before it is read whole
    (at once when its ``Content-Length`` says so).

    Raises:
        MessageTooLargeError: The body is larger than ``max_body_bytes``.
        InvalidRequestError: The client went away before the whole body arrived.
    """
    too_large = MessageTooLargeError(f"The request body exceeds {max_body_bytes} bytes.")
    declared = req.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in req.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise InvalidRequestError("The client went away before its request body arrived.") from None
    return b"".join(chunks)


def is_json_media_type(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` header names JSON (``application/json`` or ``application/*+json``)."""
    return bool(_JSON_MEDIA_TYPE.fullmatch((content_type or "").split(";")[0].strip()))


def parse_json(raw: bytes) -> Any:
    """The JSON value of ``raw`` (UTF-8, at most ``MAX_JSON_DEPTH`` deep), in time linear in its size.

    Raises:
        InvalidJsonError: It is not UTF-8, nests too deep, or is not JSON.
    """
    try:
        text = raw.decode("utf-8")  # JSON must be UTF-8 (RFC 8259); no sniffing of UTF-16/32
    except UnicodeDecodeError:
        raise InvalidJsonError("The request body is not UTF-8 encoded JSON.") from None
    try:
        return decode_json(text, MAX_JSON_DEPTH)
    except TooDeepError:
        raise InvalidJsonError(f"The request body nests JSON deeper than {MAX_JSON_DEPTH} levels.") from None
    except ValueError:
        raise InvalidJsonError("The request body is not valid JSON.") from None


async def json_body(req: Request, max_body_bytes: int) -> Any:
    """The request's JSON body, strictly: a JSON media type, at most ``max_body_bytes``, UTF-8, at most
    ``MAX_JSON_DEPTH`` deep. Every front door parses its body here.

    Raises:
        UnsupportedMediaTypeError, MessageTooLargeError, InvalidJsonError.
    """
    if not is_json_media_type(req.headers.get("content-type")):
        raise UnsupportedMediaTypeError("Send the request as JSON with 'Content-Type: application/json'.")
    return parse_json(await body(req, max_body_bytes))


async def json_object(req: Request, max_bytes: int, shape: str) -> dict[str, Any]:
    """The request's JSON object (``json_body``), sized for a message of ``max_bytes``; ``shape`` says what to
    send when the body is not a JSON object.

    Raises:
        UnsupportedMediaTypeError, MessageTooLargeError, InvalidJsonError, InvalidRequestError.
    """
    payload = await json_body(req, body_limit(max_bytes))
    if not isinstance(payload, dict):
        raise InvalidRequestError(shape)
    return payload


def checked_message(message: str, max_bytes: int, field: str = "message") -> str:
    """``message`` if it says something, is valid Unicode and fits ``max_bytes`` in UTF-8.

    Raises:
        InvalidRequestError, MessageTooLargeError.
    """
    if not message.strip():
        raise InvalidRequestError(f"'{field}' must be a non-empty string.")
    try:
        size = len(message.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidRequestError(f"'{field}' contains unpaired surrogate characters.") from None
    if size > max_bytes:
        raise MessageTooLargeError(f"The message exceeds {max_bytes} bytes (MAX_MESSAGE_BYTES).")
    return message


async def turn_request(req: Request, max_bytes: int) -> tuple[str | None, list[tuple[str, bool]]]:
    """The validated message and approval answers ``(id, approved)`` of a turn request."""
    payload = await json_object(req, max_bytes, _TURN_SHAPE)
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
    message = checked_message(request.message, max_bytes) if request.message is not None else None
    return message, [(answer.id, answer.approved) for answer in request.approvals or ()]


def service_and_owner(req: Request) -> tuple[TurnService, str]:
    """The process's service and the owner key of the caller (``platform/identity.py``): every front door
    authenticates the caller first.

    Raises:
        UnauthenticatedError: The request names no caller where ``AUTH_MODE`` requires one.
        ConfigurationError: The settings are invalid.
    """
    from ..platform.identity import caller
    from ..runtime import get_service

    service = get_service()
    return service, caller(req.headers, service.settings).owner


def bearer(req: Request) -> str | None:
    """The caller's bearer token (``Authorization: Bearer ...``, which Easy Auth validated), for MCP servers that
    act as the caller; ``None`` without one. It is never logged or stored."""
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
