"""Responses, output items and conversation items in the shapes of OpenAI's API reference (the ``openai``
package's types check them in the tests).

Tool calls run on the server, so they are ``mcp_call`` items (with their output), never ``function_call``
items a client would think it must run; a call that waits for a person is an ``mcp_approval_request``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .requests import ResponseRef

if TYPE_CHECKING:  # loaded with the service; indexing the app stays light
    from ...sessions.bodies import Approval, Message
    from ...state.documents import Usage

#: Conversation items are made from at most this many transcript messages per page read.
PAGE_MESSAGES = 100
#: The messages a request adds before its reply are at most a few (lost calls' notes, answers, the message).
INPUT_MESSAGES = 16


def usage(value: Usage | None) -> dict[str, Any] | None:
    """A turn's token usage in the Responses shape (``null`` when the model reported none)."""
    if value is None:
        return None
    return {
        "input_tokens": value.input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": value.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": value.total_tokens,
    }


def message_item(item_id: str, text: str, *, role: str = "assistant", status: str = "completed") -> dict[str, Any]:
    """A message item: the assistant's ``output_text``, or a user's ``input_text``."""
    part = (
        {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        if role == "assistant"
        else {"type": "input_text", "text": text}
    )
    return {"id": item_id, "type": "message", "role": role, "status": status, "content": [part]}


def text_part(text: str = "") -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def mcp_call(
    item_id: str, name: str, arguments: Any, label: str, output: str | None = None, status: str = "completed"
) -> dict[str, Any]:
    """A tool call the app ran (or is running): ``mcp_call`` with its arguments as JSON text and its output."""
    return {
        "id": item_id,
        "type": "mcp_call",
        "server_label": label,
        "name": name or "tool",
        "arguments": _arguments(arguments),
        "output": output,
        "error": None,
        "status": status,
    }


def approval_request(approval: Approval | dict[str, Any], label: str) -> dict[str, Any]:
    """A tool call waiting for a person: answer it with an ``mcp_approval_response`` input item."""
    data = approval if isinstance(approval, dict) else approval.as_json()
    return {
        "id": data["id"],
        "type": "mcp_approval_request",
        "server_label": label,
        "name": data["name"],
        "arguments": _arguments(data.get("arguments")),
    }


def response(
    ref: ResponseRef,
    *,
    status: str,
    model: str,
    output: Sequence[dict[str, Any]],
    usage_: Usage | None = None,
    previous_response_id: str | None = None,
    metadata: dict[str, str] | None = None,
    error: dict[str, Any] | None = None,
    completed: bool = False,
) -> dict[str, Any]:
    """A response object: one turn of the conversation ``ref.session_id``."""
    return {
        "id": ref.id,
        "object": "response",
        "created_at": ref.created,
        "completed_at": ref.created if completed else None,
        "status": status,
        "error": error,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": list(output),
        "parallel_tool_calls": True,
        "previous_response_id": previous_response_id,
        "reasoning": None,
        "store": True,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "usage": usage(usage_),
        "metadata": metadata or {},
        "conversation": {"id": ref.session_id},
        "background": False,
    }


def turn_output(messages: Sequence[Message], turn: int, label: str) -> list[dict[str, Any]]:
    """The output items of the turn whose reply starts at ``messages[0]``: its assistant text and tool calls
    (with their results), up to the next message a person sent."""
    output: list[dict[str, Any]] = []
    results = {m.tool_call_id: m for m in messages if m.role == "tool"}
    for message in messages:
        if message.role == "user":
            break
        if message.role != "assistant":
            continue
        if message.text:
            output.append(message_item(f"msg_{turn}_{len(output)}", message.text))
        for call in message.tool_calls or ():
            result = results.get(call.id)
            output.append(
                mcp_call(
                    f"mcp_{call.id}",
                    str(call.name),
                    call.arguments,
                    label,
                    result.result if result else None,
                    "completed" if result else "incomplete",
                )
            )
    return output


def turn_inputs(messages: Sequence[Message]) -> list[Message]:
    """The trailing messages a person sent (text and approval answers): a turn's input, when ``messages`` end
    where its reply begins."""
    inputs: list[Message] = []
    for message in reversed(messages):
        if message.role != "user":
            break
        inputs.insert(0, message)
    return inputs


def conversation(session_id: str, created_at: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    return {"id": session_id, "object": "conversation", "created_at": unix(created_at), "metadata": metadata or {}}


def conversation_items(messages: Sequence[Message], label: str) -> list[tuple[int, dict[str, Any]]]:
    """The conversation items of transcript messages, each with its message's index: user and assistant
    messages, tool calls (``mcp_call``, with the result from the message that follows) and approval answers
    (``mcp_approval_response``). Tool results are part of their calls."""
    results = {m.tool_call_id: m for m in messages if m.role == "tool"}
    items: list[tuple[int, dict[str, Any]]] = []
    for message in messages:
        index = int(message.index or 0)
        if message.role in ("user", "assistant") and message.text:
            items.append((index, message_item(f"msg_{index}", message.text, role=message.role)))
        for k, call in enumerate(message.tool_calls or ()):
            result = results.get(call.id)
            output = result.result if result else None
            status = "completed" if result else "incomplete"
            items.append((index, mcp_call(f"mcp_{index}_{k}", str(call.name), call.arguments, label, output, status)))
        for k, answer in enumerate(message.approvals or ()):
            items.append(
                (
                    index,
                    {
                        "id": f"mcpr_{index}_{k}",
                        "type": "mcp_approval_response",
                        "approval_request_id": answer.id,
                        "approve": answer.approved,
                    },
                )
            )
    return items


def item_page(items: Iterable[dict[str, Any]], after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` items that follow the item ``after`` (all when ``None``), and whether more follow."""
    page: list[dict[str, Any]] = []
    skipping = after is not None
    more = False
    for item in items:
        if skipping:
            skipping = item["id"] != after
            continue
        if len(page) == limit:
            more = True
            break
        page.append(item)
    return page, more


def item_list(page: Sequence[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": list(page),
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": has_more,
    }


def unix(timestamp: str) -> int:
    """Seconds since the epoch of a stored ISO 8601 time."""
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())


def _arguments(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments if arguments is not None else {}, ensure_ascii=False, separators=(",", ":"))
