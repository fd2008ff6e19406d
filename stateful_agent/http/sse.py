"""Server-Sent Events: a turn's events on the wire, and keep-alives while the model is silent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from fastapi import Request
from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, format_sse_event

from ..errors import AgentServiceError
from ..state.jsontext import encode_json
from .problems import log_problem, problem, unexpected

logger = logging.getLogger(__name__)


def frame(event: str, data: dict[str, Any]) -> bytes:
    """One Server-Sent Event: its name and its JSON data."""
    return format_sse_event(event=event, data_str=encode_json(data, compact=False).decode("utf-8"))


def response(events: AsyncIterator[bytes], headers: dict[str, str]) -> EventSourceResponse:
    """The streaming response of ``events`` (never cached or buffered by proxies)."""
    return EventSourceResponse(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})


async def encoded(events: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """A turn's events as Server-Sent Events: each event's ``kind`` and ``data``."""
    async for event in events:
        yield frame(event.kind, event.data)


async def live(
    events: AsyncIterator[Any],
    req: Request,
    turn: Any,
    encode: Callable[[Any], Iterable[bytes]] | None = None,
    failure: Callable[[AgentServiceError], Iterable[bytes]] | None = None,
) -> AsyncIterator[bytes]:
    """A live turn's events as they happen: by default this API's own (``delta``, ``tool_call`` and
    ``tool_result`` events while the model works, then ``approval`` events and ``done``, or ``error`` when the
    turn fails and nothing is stored); another protocol passes its own ``encode`` and ``failure``. Runs inside
    the request's span and ends it; a client that goes away abandons the turn."""
    from ..turns.events import Completed

    instance = req.url.path
    encode = encode or (lambda event: [frame(event.kind, event.data)])
    failure = failure or (lambda error: [frame("error", problem(error, instance))])
    with turn.streaming():
        try:
            async for event in events:
                if isinstance(event, Completed):
                    turn.done("stored")
                for encoded_event in encode(event):
                    yield encoded_event
        except (asyncio.CancelledError, GeneratorExit):
            logger.warning("%s %s (stream) abandoned by the client; nothing was stored", req.method, instance)
            turn.done("abandoned")
            raise
        except Exception as exc:
            error = exc if isinstance(exc, AgentServiceError) else unexpected(exc)
            log_problem(req, error, stream=True)
            turn.failed(error)
            for encoded_event in failure(error):
                yield encoded_event


async def with_keepalive(events: AsyncIterator[bytes], interval: float) -> AsyncIterator[bytes]:
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
