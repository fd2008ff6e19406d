"""A turn's events as the Responses API's stream events, numbered by ``sequence_number``.

``response.created`` and ``response.in_progress``; for the reply's text a message item
(``response.output_item.added``, ``response.content_part.added``, ``response.output_text.delta``..., the
``.done`` events); for each tool call an ``mcp_call`` item, open while the tool runs; for each call that waits for
a person an ``mcp_approval_request`` item; then ``response.completed``, or ``error`` and ``response.failed``.
The same builder makes the response of a request that does not stream.
"""

from __future__ import annotations

from typing import Any

from ...errors import AgentServiceError
from ...turns.events import Accepted, ApprovalRequested, Completed, TextDelta, ToolEvent, TurnEvent
from . import shapes
from .requests import CreateResponse, ResponseRef


class ResponseBuilder:
    """Builds one response from a turn's events; each step returns the stream events it makes."""

    def __init__(self, request: CreateResponse, model: str, label: str) -> None:
        self.request = request
        self.model = request.model or model
        self.label = label
        self.ref: ResponseRef | None = None
        self.output: list[dict[str, Any]] = []
        self.usage: Any = None
        self.status = "in_progress"
        self.error: dict[str, Any] | None = None
        self._sequence = 0
        self._message: int | None = None  # output index of the message being written
        self._calls: dict[str, int] = {}  # call id -> output index, while the tool runs

    def start(self, accepted: Accepted) -> list[dict[str, Any]]:
        """``response.created`` and ``response.in_progress``, once the turn is admitted."""
        self.ref = ResponseRef(
            accepted.session_id, accepted.turn, accepted.first, self.request.created, self.request.owner
        )
        return [self._lifecycle("response.created"), self._lifecycle("response.in_progress")]

    def feed(self, event: TurnEvent) -> list[dict[str, Any]]:
        """The stream events of one turn event."""
        if isinstance(event, TextDelta):
            return self._text(event.text)
        if isinstance(event, ToolEvent):
            return self._call(event.data) if event.kind == "tool_call" else self._result(event.data)
        if isinstance(event, ApprovalRequested):
            events = [*self._close_message(), *self._close_calls()]
            return [*events, *self.items([shapes.approval_request(event.data, self.label)])]
        if isinstance(event, Completed):
            events = [*self._close_message(), *self._close_calls()]
            if not any(item["type"] == "message" for item in self.output) and event.result.reply:
                events += self.items([shapes.message_item(self._message_id(), event.result.reply)])
            self.usage, self.status = event.result.usage, "completed"
            return [*events, self._lifecycle("response.completed")]
        return []

    def items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Whole output items (a replay's, an approval request): ``output_item.added`` and ``.done`` each."""
        events = []
        for item in items:
            index = len(self.output)
            self.output.append(item)
            events += [
                self._event("response.output_item.added", output_index=index, item=item),
                self._event("response.output_item.done", output_index=index, item=item),
            ]
        return events

    def fail(self, error: AgentServiceError) -> list[dict[str, Any]]:
        """``error`` and ``response.failed``: the turn failed after it was admitted; nothing was stored."""
        self.status = "failed"
        self.error = {"code": error.code, "message": error.detail}
        return [
            self._event("error", code=error.code, message=error.detail, param=None),
            self._lifecycle("response.failed"),
        ]

    def response(self) -> dict[str, Any]:
        """The response object as it stands."""
        assert self.ref is not None
        previous = self.request.previous.id if self.request.previous else None
        return shapes.response(
            self.ref,
            status=self.status,
            model=self.model,
            output=self.output if self.status != "in_progress" else [],
            usage_=self.usage,
            previous_response_id=previous,
            metadata=self.request.metadata,
            error=self.error,
            completed=self.status == "completed",
        )

    def _text(self, text: str) -> list[dict[str, Any]]:
        events = []
        if self._message is None:
            self._message = len(self.output)
            item = shapes.message_item(self._message_id(), "", status="in_progress")
            item["content"] = []
            self.output.append(item)
            events += [
                self._event("response.output_item.added", output_index=self._message, item=_copy(item)),
                self._event(
                    "response.content_part.added",
                    output_index=self._message,
                    item_id=item["id"],
                    content_index=0,
                    part=shapes.text_part(),
                ),
            ]
            item["content"].append(shapes.text_part())
        item = self.output[self._message]
        item["content"][0]["text"] += text
        events.append(
            self._event(
                "response.output_text.delta",
                output_index=self._message,
                item_id=item["id"],
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _close_message(self) -> list[dict[str, Any]]:
        if self._message is None:
            return []
        index, self._message = self._message, None
        item = self.output[index]
        item["status"] = "completed"
        part = item["content"][0]
        where = {"output_index": index, "item_id": item["id"], "content_index": 0}
        return [
            self._event("response.output_text.done", **where, text=part["text"], logprobs=[]),
            self._event("response.content_part.done", **where, part=_copy(part)),
            self._event("response.output_item.done", output_index=index, item=_copy(item)),
        ]

    def _close_calls(self) -> list[dict[str, Any]]:
        """Calls that did not run in this response (they wait for a person: see their approval requests)."""
        events = []
        for index in self._calls.values():
            item = self.output[index]
            item["status"] = "incomplete"
            events.append(self._event("response.output_item.done", output_index=index, item=_copy(item)))
        self._calls.clear()
        return events

    def _call(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close_message()
        index = len(self.output)
        item = shapes.mcp_call(f"mcp_{data['id']}", data["name"], data.get("arguments"), self.label, status="calling")
        self.output.append(item)
        self._calls[str(data["id"])] = index
        return [
            *events,
            self._event("response.output_item.added", output_index=index, item=_copy(item)),
            self._event("response.mcp_call.in_progress", output_index=index, item_id=item["id"]),
        ]

    def _result(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        index = self._calls.pop(str(data["id"]), None)
        if index is None:  # an approved call from an earlier response ran as this one began
            events = self._close_message()
            item = shapes.mcp_call(f"mcp_{data['id']}", data.get("name") or "tool", "", self.label, data.get("result"))
            return [*events, *self.items([item])]
        item = self.output[index]
        item.update(output=data.get("result"), status="completed")
        return [
            self._event("response.mcp_call.completed", output_index=index, item_id=item["id"]),
            self._event("response.output_item.done", output_index=index, item=_copy(item)),
        ]

    def _message_id(self) -> str:
        assert self.ref is not None
        return f"msg_{self.ref.turn}_{len(self.output)}"

    def _lifecycle(self, kind: str) -> dict[str, Any]:
        return self._event(kind, response=self.response())

    def _event(self, kind: str, **payload: Any) -> dict[str, Any]:
        event = {"type": kind, **payload, "sequence_number": self._sequence}
        self._sequence += 1
        return event


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "content": [dict(part) for part in item["content"]]} if "content" in item else dict(item)
