"""What the Responses door accepts: ``POST /v1/responses`` bodies, conversation requests, and its ids.

A response id names the session, the turn and where the turn's reply starts in the transcript, so a later
request finds them with one point read: ``resp_<session id, base64url>.<turn>.<first message>.<created>.<owner>``
(a fingerprint of the caller: another caller's response id names nothing of theirs).
Fields that would change the agent (its tools, instructions, sampling) are refused, never silently ignored.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ...errors import InvalidRequestError, InvalidSessionIdError, ResponseNotFoundError, UnsupportedParameterError
from ...sessions import cursors
from ..requests import SESSION_ID_PATTERN, checked_message

#: Fields of ``POST /v1/responses`` this app honours.
ACCEPTED = frozenset(
    {"model", "input", "conversation", "previous_response_id", "stream", "store", "metadata", "stream_options"}
)
#: Identifiers for the model provider's caching and abuse monitoring: they do not change the agent, and the
#: app's own deployment and identity rules apply; accepted and not used (documented).
IDENTIFIERS = frozenset({"user", "safety_identifier", "prompt_cache_key"})
#: Fields that would change the agent, whose tools, instructions and model settings are the app's.
AGENT_FIELDS = frozenset(
    {
        "tools",
        "tool_choice",
        "instructions",
        "temperature",
        "top_p",
        "top_logprobs",
        "max_output_tokens",
        "max_tool_calls",
        "parallel_tool_calls",
        "reasoning",
        "text",
        "truncation",
        "prompt",
        "include",
        "background",
        "service_tier",
        "prompt_cache_retention",
        "conversation_id",
    }
)
_ITEM_ID = re.compile(r"(?:msg|mcp|mcpr)_([0-9]{1,9})(?:_[0-9]{1,4})?")
_MAX_METADATA = 16


def owner_tag(owner: str) -> str:
    """A short fingerprint of a caller, carried in its response ids."""
    return cursors.owner_tag("response", owner)


@dataclass(frozen=True)
class ResponseRef:
    """What a response id names: the session, the turn, the index of the turn's first reply message, when, and
    whose it is."""

    session_id: str
    turn: int
    first: int
    created: int
    owner: str = ""  # the caller's fingerprint (``owner_tag``)

    @property
    def id(self) -> str:
        return cursors.place_id("resp_", self.session_id, (self.turn, self.first, self.created), self.owner)


def parse_response_id(text: str, owner: str, *, param: str | None = None) -> ResponseRef:
    """The session, turn and position a response id of ``owner`` names.

    Raises:
        ResponseNotFoundError: ``text`` is not a response id this app made for this caller (``param`` names
            the field).
    """
    tag = owner_tag(owner)
    place = cursors.read_place_id("resp_", text, 3, tag)
    if place is None or not SESSION_ID_PATTERN.fullmatch(place[0]) or place[1][0] < 1:
        error = ResponseNotFoundError(f"No response with id '{text}'.")
        if param:
            error.extra["param"] = param
        raise error
    session_id, (turn, first, created) = place
    return ResponseRef(session_id, turn, first, created, tag)


def item_index(item_id: str) -> int:
    """The transcript index of a conversation item id (``after``).

    Raises:
        UnsupportedParameterError: It is not an item id of this API.
    """
    match = _ITEM_ID.fullmatch(item_id)
    if not match:
        raise UnsupportedParameterError(
            f"'after' must be an item id this API returned, not '{item_id}'.", param="after"
        )
    return int(match.group(1))


def new_conversation_id(key: str | None = None) -> str:
    """A new conversation (session) id: random, or derived from an ``Idempotency-Key`` so a retry of the same
    request lands on the same conversation (keys are only ever compared within the caller's own sessions)."""
    if key:
        return "conv_" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return "conv_" + uuid.uuid4().hex


@dataclass(frozen=True)
class CreateResponse:
    """A checked ``POST /v1/responses``: the turn to run and how to report it."""

    session_id: str
    message: str | None
    answers: list[tuple[str, bool]]
    stream: bool
    model: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    previous: ResponseRef | None = None  # with ``previous_response_id``: the response this one continues
    conversation: bool = False  # the caller named the conversation
    owner: str = ""  # the caller's fingerprint (``owner_tag``)
    created: int = field(default_factory=lambda: int(time.time()))


def create_response(body: dict[str, Any], max_bytes: int, key: str | None, owner: str) -> CreateResponse:
    """Check a ``POST /v1/responses`` body.

    Raises:
        UnsupportedParameterError: A field this app does not take, or takes only with other values.
        InvalidRequestError: A field of the wrong type, or no input.
        InvalidSessionIdError, ResponseNotFoundError: ``conversation`` or ``previous_response_id`` is malformed.
        MessageTooLargeError: The input text exceeds ``MAX_MESSAGE_BYTES``.
    """
    for name in body:
        if name in ACCEPTED or body[name] is None or body[name] == [] or name in IDENTIFIERS:
            continue  # an empty list of tools or includes asks for nothing
        if name in AGENT_FIELDS:
            raise UnsupportedParameterError(
                f"'{name}' is not supported: this agent's model, instructions and tools are set by the app "
                "(see docs/responses.md). Remove it.",
                param=name,
            )
        raise UnsupportedParameterError(f"Unknown parameter: '{name}'.", param=name)
    stream = _optional(body, "stream", bool, False)
    if _optional(body, "store", bool, True) is not True:
        raise UnsupportedParameterError(
            "'store': false is not supported: every turn is stored in its conversation.", param="store"
        )
    model = _optional(body, "model", str, None)
    metadata = _metadata(body.get("metadata"))
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_obfuscation"}):
        raise UnsupportedParameterError("'stream_options' takes only 'include_obfuscation'.", param="stream_options")
    message, answers = _input(body.get("input"), max_bytes)
    previous, conversation = body.get("previous_response_id"), body.get("conversation")
    if previous is not None and conversation is not None:
        raise UnsupportedParameterError(
            "'previous_response_id' and 'conversation' cannot both be given.", param="previous_response_id"
        )
    if previous is not None:
        if not isinstance(previous, str):
            raise InvalidRequestError(
                "'previous_response_id' must be a string.", extra={"param": "previous_response_id"}
            )
        ref = parse_response_id(previous, owner, param="previous_response_id")
        return CreateResponse(ref.session_id, message, answers, stream, model, metadata, previous=ref, owner=ref.owner)
    tag = owner_tag(owner)
    if conversation is not None:
        session_id = conversation_id(conversation)
        return CreateResponse(session_id, message, answers, stream, model, metadata, conversation=True, owner=tag)
    return CreateResponse(new_conversation_id(key), message, answers, stream, model, metadata, owner=tag)


def conversation_id(value: Any) -> str:
    """The session id of a ``conversation`` field: an id, or ``{"id": ...}``.

    Raises:
        InvalidRequestError, InvalidSessionIdError.
    """
    if isinstance(value, dict) and set(value) <= {"id"}:
        value = value.get("id")
    if not isinstance(value, str):
        raise InvalidRequestError('\'conversation\' must be an id or {"id": "<id>"}.', extra={"param": "conversation"})
    if not SESSION_ID_PATTERN.fullmatch(value):
        raise InvalidSessionIdError(
            "A conversation id is 1-128 characters: letters, digits, '.', '_', ':' and '-', starting with a letter "
            "or digit.",
            extra={"param": "conversation"},
        )
    return value


def _input(value: Any, max_bytes: int) -> tuple[str | None, list[tuple[str, bool]]]:
    """The user's text and approval answers of ``input``: a string, or a list of user messages (text parts)
    and ``mcp_approval_response`` items."""
    if isinstance(value, str):
        return checked_message(value, max_bytes, "input"), []
    if not isinstance(value, list) or not value:
        raise InvalidRequestError("'input' must be a non-empty string or list of items.", extra={"param": "input"})
    texts: list[str] = []
    answers: list[tuple[str, bool]] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequestError(f"'{where}' must be an object.", extra={"param": where})
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "mcp_approval_response":
            answers.append(_answer(item, where))
        elif kind == "message":
            texts.extend(_user_text(item, where))
        elif kind in ("input_text",):
            texts.append(_text_part(item, where))
        else:
            raise UnsupportedParameterError(
                f"'{where}' of type {kind!r} is not supported: send user messages with text, and "
                "'mcp_approval_response' items to answer approval requests.",
                param=where,
            )
    if len({answer_id for answer_id, _ in answers}) != len(answers):
        raise InvalidRequestError("Each approval request is answered once.", extra={"param": "input"})
    if not texts and not answers:
        raise InvalidRequestError("'input' holds no text and no approval answer.", extra={"param": "input"})
    message = checked_message("\n\n".join(texts), max_bytes, "input") if texts else None
    return message, answers


def _user_text(item: dict[str, Any], where: str) -> list[str]:
    unknown = set(item) - {"type", "role", "content", "id", "status"}
    if unknown:
        raise UnsupportedParameterError(f"'{where}.{sorted(unknown)[0]}' is not supported.", param=where)
    if item.get("role") != "user":
        raise UnsupportedParameterError(
            f"'{where}' has role {item.get('role')!r}: only 'user' messages are taken (the agent's instructions and "
            "its history are the app's).",
            param=f"{where}.role",
        )
    content = item.get("content")
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list) or not content:
        raise InvalidRequestError(f"'{where}.content' must be text or a list of parts.", extra={"param": where})
    return [_text_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]


def _text_part(part: Any, where: str) -> str:
    if not isinstance(part, dict) or part.get("type") != "input_text":
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        raise UnsupportedParameterError(
            f"'{where}' of type {kind!r} is not supported: only 'input_text' parts are.", param=where
        )
    if set(part) - {"type", "text"} or not isinstance(part.get("text"), str):
        raise InvalidRequestError(
            f'\'{where}\' must be {{"type": "input_text", "text": "..."}}.', extra={"param": where}
        )
    return str(part["text"])


def _answer(item: dict[str, Any], where: str) -> tuple[str, bool]:
    unknown = set(item) - {"type", "approval_request_id", "approve", "reason", "id"}
    request_id, approve = item.get("approval_request_id"), item.get("approve")
    if unknown or not isinstance(request_id, str) or not request_id or not isinstance(approve, bool):
        raise InvalidRequestError(
            f'\'{where}\' must be {{"type": "mcp_approval_response", "approval_request_id": "<id>", '
            '"approve": true|false}.',
            extra={"param": where},
        )
    return request_id, approve


#: Most items a new conversation may start with (OpenAI's limit).
MAX_INITIAL_ITEMS = 20


def create_conversation(body: dict[str, Any], max_bytes: int) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The initial messages (``(role, text)``) and metadata of a ``POST /v1/conversations`` body.

    Raises:
        UnsupportedParameterError: A field other than ``items`` and ``metadata``, or an item that is not a user or
            assistant message with text.
        InvalidRequestError: A field of the wrong shape.
        MessageTooLargeError: An item's text exceeds ``MAX_MESSAGE_BYTES``.
    """
    for name in body:
        if name not in ("items", "metadata"):
            raise UnsupportedParameterError(f"Unknown parameter: '{name}'.", param=name)
    items = body.get("items") or []
    if not isinstance(items, list) or len(items) > MAX_INITIAL_ITEMS:
        raise InvalidRequestError(
            f"'items' must be a list of at most {MAX_INITIAL_ITEMS} messages.", extra={"param": "items"}
        )
    return _messages(items, max_bytes), _metadata(body.get("metadata"))


def add_items(body: dict[str, Any], max_bytes: int) -> list[tuple[str, str]]:
    """The messages (``(role, text)``) of a ``POST /v1/conversations/{id}/items`` body, ``{"items": [...]}``:
    1 to 20 user or assistant messages with text.

    Raises:
        UnsupportedParameterError, InvalidRequestError, MessageTooLargeError: As for ``create_conversation``.
    """
    for name in body:
        if name != "items":
            raise UnsupportedParameterError(f"Unknown parameter: '{name}'.", param=name)
    items = body.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_INITIAL_ITEMS:
        raise InvalidRequestError(
            f"'items' must be a list of 1 to {MAX_INITIAL_ITEMS} messages.", extra={"param": "items"}
        )
    return _messages(items, max_bytes)


def _messages(items: list[Any], max_bytes: int) -> list[tuple[str, str]]:
    return [_initial_message(item, f"items[{i}]", max_bytes) for i, item in enumerate(items)]


def update_conversation(body: dict[str, Any]) -> dict[str, str]:
    """The new metadata of a ``POST /v1/conversations/{id}`` body (``{"metadata": {...}}``, which replaces it).

    Raises:
        UnsupportedParameterError: A field other than ``metadata``.
        InvalidRequestError: No ``metadata``, or metadata of the wrong shape.
    """
    for name in body:
        if name != "metadata":
            raise UnsupportedParameterError(f"Unknown parameter: '{name}'.", param=name)
    if not isinstance(body.get("metadata"), dict):
        raise InvalidRequestError("'metadata' is required: an object of string values.", extra={"param": "metadata"})
    return _metadata(body["metadata"])


def _initial_message(item: Any, where: str, max_bytes: int) -> tuple[str, str]:
    """A user or assistant message a conversation starts with: its role and text."""
    if not isinstance(item, dict):
        raise InvalidRequestError(f"'{where}' must be an object.", extra={"param": where})
    if item.get("type", "message") != "message" or set(item) - {"type", "role", "content"}:
        raise UnsupportedParameterError(
            f'\'{where}\' is not supported: a conversation starts with messages ({{"type": "message", '
            '"role": "user"|"assistant", "content": ...}).',
            param=where,
        )
    role = item.get("role")
    if role not in ("user", "assistant"):
        raise UnsupportedParameterError(
            f"'{where}' has role {role!r}: only 'user' and 'assistant' messages are taken (the agent's instructions "
            "are the app's).",
            param=f"{where}.role",
        )
    content = item.get("content")
    if isinstance(content, list) and content:
        kind = "input_text" if role == "user" else "output_text"
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != kind or not isinstance(part.get("text"), str):
                raise InvalidRequestError(
                    f'\'{where}.content[{j}]\' must be {{"type": "{kind}", "text": "..."}}.', extra={"param": where}
                )
            texts.append(part["text"])
        content = "\n\n".join(texts)
    if not isinstance(content, str):
        raise InvalidRequestError(f"'{where}.content' must be text or a list of text parts.", extra={"param": where})
    return role, checked_message(content, max_bytes, f"{where}.content")


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if (
        not isinstance(value, dict)
        or len(value) > _MAX_METADATA
        or not all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512 for k, v in value.items()
        )
    ):
        raise InvalidRequestError(
            "'metadata' must be an object of at most 16 string values (keys up to 64 characters, values up to 512).",
            extra={"param": "metadata"},
        )
    return dict(value)


def _optional(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise InvalidRequestError(f"'{name}' must be a {kind.__name__}.", extra={"param": name})
    return value


def list_query(params: Any) -> tuple[int | None, int, str]:
    """``after`` (a transcript index), ``limit`` (1-100, default 20) and ``order`` (``asc``/``desc``, default
    ``desc``) of ``GET /v1/conversations/{id}/items``.

    Raises:
        InvalidRequestError, UnsupportedParameterError.
    """
    unknown = set(params) - {"after", "limit", "order", "include"}
    if unknown:
        raise UnsupportedParameterError(f"Unknown parameter: '{sorted(unknown)[0]}'.", param=sorted(unknown)[0])
    raw = params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidRequestError("'limit' must be a number from 1 to 100.", extra={"param": "limit"})
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequestError("'order' must be 'asc' or 'desc'.", extra={"param": "order"})
    after = params.get("after")
    return (item_index(after) if after else None), int(raw), order
