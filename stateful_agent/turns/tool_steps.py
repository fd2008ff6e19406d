"""The tool steps of a streamed turn: one ``tool_call`` per call, whole, however the model streamed it.

Chat Completions streams send a call in fragments: OpenAI and Azure OpenAI send the ``id`` and name first,
then pieces of the arguments (often one JSON token each), and parallel calls may interleave by index;
llama.cpp repeats the id and name on every fragment. MAF passes the fragments on as they arrive, each as a
``function_call`` content of the call's id. ``ToolSteps`` gathers them per call and reports a call once it
is complete: when the model moves on (a later call whose predecessors' arguments already parse, any other
content, its finish reason) or when the stream ends. (Message ids are no signal: some servers change them
on every chunk.) Calls are reported in the order the
model began them, each once, with their parsed arguments (``{"raw": text}`` when they never become JSON).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agent_framework import AgentResponseUpdate, Content, Message
from agent_framework.exceptions import ContentError

from ..sessions import transcript
from .events import ToolEvent

#: MAF's key for a fragment's position among the parallel calls of one reply (Chat Completions' ``index``).
_INDEX = "tool_call_index"


class ToolSteps:
    """Assembles the tool steps of one streamed turn from MAF's updates.

    ``earlier`` are the session's messages before the turn: a result may belong to a call made in an
    earlier turn (an approved call runs in the turn that answers it), and its event names that call's tool.
    """

    def __init__(self, earlier: Sequence[Message] = ()) -> None:
        self._pending: dict[str, Content] = {}  # call id -> the call so far, in the order the calls began
        self._by_index: dict[Any, str] = {}  # a reply's tool-call index -> call id, for fragments without an id
        self._names: dict[str, str] = {}  # call id -> tool name, for the results
        self._reported: set[str] = set()  # calls already sent: a late fragment (trailing whitespace) is no new call
        self._earlier = earlier

    def feed(self, update: AgentResponseUpdate) -> list[ToolEvent]:
        """The tool events ``update`` completes, in order."""
        events: list[ToolEvent] = []
        for content in update.contents:
            if content.type == "function_call":
                if not content.informational_only:
                    events += self._fragment(content)
                continue
            events += self.flush()  # anything else follows the calls it comes after
            if content.type == "function_result" and content.call_id:
                result = transcript.tool_result_text(content)
                name = self._names.get(content.call_id) or self._earlier_name(content.call_id)
                events.append(ToolEvent("tool_result", {"id": content.call_id, "name": name, "result": result}))
        if update.finish_reason is not None:
            events += self.flush()
        return events

    def flush(self) -> list[ToolEvent]:
        """Report every pending call (the model is done with them)."""
        events = [self._event(call) for call in self._pending.values()]
        self._pending.clear()
        self._by_index.clear()
        return events

    def _fragment(self, content: Content) -> list[ToolEvent]:
        index = (content.additional_properties or {}).get(_INDEX)
        call_id = content.call_id or self._by_index.get(index) or next(reversed(self._pending), None)
        if not call_id or call_id in self._reported:
            return []
        events: list[ToolEvent] = []
        previous = self._pending.get(call_id)
        if previous is None:
            events += self._complete_prefix()  # a sequential stream has finished the calls before this one
            self._pending[call_id] = content
        else:
            self._pending[call_id] = _merged(previous, content)
        if index is not None:
            self._by_index[index] = call_id
        if content.name and call_id not in self._names:
            self._names[call_id] = str(content.name)
        return events

    def _complete_prefix(self) -> list[ToolEvent]:
        """Report the leading pending calls whose arguments already form a whole JSON value."""
        events = []
        for call_id, call in list(self._pending.items()):
            if not _whole(call.arguments):
                break
            events.append(self._event(call))
            del self._pending[call_id]
        for index in [i for i, call_id in self._by_index.items() if call_id not in self._pending]:
            del self._by_index[index]
        return events

    def _earlier_name(self, call_id: str) -> str | None:
        for message in reversed(self._earlier):
            for content in message.contents:
                if content.type == "function_call" and content.call_id == call_id and content.name:
                    return str(content.name)
        return None

    def _event(self, call: Content) -> ToolEvent:
        call_id = str(call.call_id)
        self._reported.add(call_id)
        name = self._names.get(call_id) or str(call.name or "")
        return ToolEvent("tool_call", {"id": call_id, "name": name, "arguments": transcript.tool_arguments(call)})


def _merged(previous: Content, fragment: Content) -> Content:
    """A call and its next fragment, merged as MAF merges them (the first name stays, argument text joins)."""
    try:
        return previous + fragment
    except (ContentError, TypeError):  # a provider that resent the whole call: the newer one stands
        return fragment


def _whole(arguments: Any) -> bool:
    if not isinstance(arguments, str):
        return arguments is not None
    try:
        json.loads(arguments)
    except (ValueError, RecursionError):
        return False
    return True
