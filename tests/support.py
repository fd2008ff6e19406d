"""Test helpers: a scripted chat client on MAF's real base classes, and service builders."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from agent_framework import (
    BaseChatClient,
    ChatMiddlewareLayer,
    ChatResponse,
    ChatResponseUpdate,
    Content,
    FunctionInvocationLayer,
    Message,
)

from stateful_agent.runtime import build_service
from stateful_agent.settings import Settings
from stateful_agent.turns import TurnService


class ModelDown(RuntimeError):
    """What a scripted failure raises."""


class ScriptedChatClient(FunctionInvocationLayer[Any], ChatMiddlewareLayer[Any], BaseChatClient[Any]):
    """Replies from a script and records every request, so the whole MAF pipeline runs.

    ``script`` items are reply strings or exceptions to raise; once it runs out,
    the reply is ``reply <n>``. ``gate``, when given, is awaited before replying.
    """

    OTEL_PROVIDER_NAME = "scripted"

    def __init__(self, script: Sequence[str | BaseException] = (), *, gate: asyncio.Event | None = None) -> None:
        super().__init__()
        self.script = list(script)
        self.gate = gate
        self.requests: list[list[tuple[str, str]]] = []
        self._arrived = asyncio.Event()

    async def wait_for_requests(self, count: int) -> None:
        """Return once the model has been called ``count`` times."""
        while len(self.requests) < count:
            self._arrived.clear()
            await self._arrived.wait()

    def _inner_get_response(
        self, *, messages: Sequence[Message], stream: bool, options: Mapping[str, Any], **kwargs: Any
    ) -> Any:
        self.requests.append([(str(m.role), m.text) for m in messages])
        self._arrived.set()
        step = self.script.pop(0) if self.script else f"reply {len(self.requests)}"

        async def _reply() -> str:
            if self.gate is not None:
                await self.gate.wait()
            if isinstance(step, BaseException):
                raise step
            return step

        if stream:

            async def _chunks() -> AsyncIterator[ChatResponseUpdate]:
                yield ChatResponseUpdate(role="assistant", contents=[Content.from_text(await _reply())])

            return self._build_response_stream(_chunks())

        async def _respond() -> ChatResponse:
            return ChatResponse(messages=[Message(role="assistant", contents=[await _reply()])])

        return _respond()


def settings_for(
    backend: str, *, cosmos: Mapping[str, str] | None = None, tmp_path: Any = None, **extra: Any
) -> Settings:
    """Settings for ``backend``; Cosmos tests get a fresh container of their own."""
    settings = Settings(backend=backend, **extra)
    if backend == "file":
        settings = replace(settings, session_dir=tmp_path / "sessions")
    if backend == "cosmos":
        assert cosmos is not None
        settings = replace(
            settings,
            cosmos_endpoint=cosmos["endpoint"],
            cosmos_key=cosmos["key"],
            cosmos_database=cosmos["database"],
            cosmos_container=f"sessions-{uuid.uuid4().hex[:12]}",
            cosmos_create_container=True,
        )
    return settings


def service_for(settings: Settings, client: BaseChatClient) -> TurnService:
    """The app's real service wiring, with ``client`` as the model."""
    return build_service(settings, chat_client=client)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
