"""Test support: a scripted chat client on MAF's real base classes, and service builders."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
from agent_framework import (
    BaseChatClient,
    ChatMiddlewareLayer,
    ChatResponse,
    ChatResponseUpdate,
    Content,
    FunctionInvocationLayer,
    Message,
)
from agent_framework.observability import ChatTelemetryLayer

from stateful_agent.platform.settings import Settings
from stateful_agent.runtime import build_service
from stateful_agent.stores import SnapshotStore
from stateful_agent.turns.service import TurnService
from testkit.servers import ROOT, LocalPostgres, clean_env, free_port


class ModelDown(RuntimeError):
    """What a scripted failure raises."""


@dataclass(frozen=True)
class FailMidStream:
    """Script step: stream ``partial``, then fail (non-streaming: fail at once)."""

    partial: str


@dataclass(frozen=True)
class CallTool:
    """Script step: say ``text`` (may be empty), then ask for tool ``name`` with ``arguments``."""

    name: str
    arguments: dict[str, Any]
    text: str = ""


@dataclass(frozen=True)
class EndsWithout:
    """Script step: reply ``text`` but with finish reason ``finish`` (``None``: the stream just closes)."""

    text: str
    finish: str | None = None


class ScriptedChatClient(
    FunctionInvocationLayer[Any], ChatMiddlewareLayer[Any], ChatTelemetryLayer[Any], BaseChatClient[Any]
):
    """Replies from a script and records every request, so the whole MAF pipeline runs.

    ``script`` items are reply strings, exceptions to raise, ``FailMidStream`` or
    ``EndsWithout``; once it runs out, the reply is ``reply <n>``. Replies finish with
    reason ``stop``, as a real model's do. ``gate``, when given, is awaited before
    replying; streamed replies come word by word, and ``pause`` (when given) is awaited
    after the first word. ``cancelled`` is set when a waiting call is cancelled.
    """

    OTEL_PROVIDER_NAME = "scripted"

    def __init__(
        self,
        script: Sequence[str | BaseException | FailMidStream | EndsWithout | CallTool] = (),
        *,
        gate: asyncio.Event | None = None,
        pause: asyncio.Event | None = None,
        usage: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.script = list(script)
        self.usage = usage
        self.gate = gate
        self.pause = pause
        self.cancelled = asyncio.Event()
        self.requests: list[list[tuple[str, str]]] = []
        self.offered: list[list[str]] = []  # per request, the names of the tools offered to the model
        self._arrived = asyncio.Event()

    async def wait_for_requests(self, count: int) -> None:
        """Return once the model has been called ``count`` times."""
        while len(self.requests) < count:
            self._arrived.clear()
            await self._arrived.wait()

    async def _wait(self, event: asyncio.Event | None) -> None:
        if event is None:
            return
        try:
            await event.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    def _inner_get_response(
        self, *, messages: Sequence[Message], stream: bool, options: Mapping[str, Any], **kwargs: Any
    ) -> Any:
        self.requests.append([(str(m.role), m.text) for m in messages])
        self.offered.append(sorted(str(getattr(tool, "name", tool)) for tool in options.get("tools") or ()))
        self._arrived.set()
        step = self.script.pop(0) if self.script else f"reply {len(self.requests)}"
        usage = None
        if self.usage is not None:
            inputs, outputs = self.usage
            usage = {"input_token_count": inputs, "output_token_count": outputs, "total_token_count": inputs + outputs}
        if isinstance(step, CallTool):
            call_id = f"call-{len(self.requests)}"
            contents = [
                *([Content.from_text(step.text)] if step.text else []),
                Content.from_function_call(call_id=call_id, name=step.name, arguments=step.arguments),
            ]

            async def _call() -> Any:
                await self._wait(self.gate)
                return ChatResponse(
                    messages=[Message(role="assistant", contents=contents)],
                    finish_reason="tool_calls",
                    usage_details=usage,
                )

            async def _call_stream() -> AsyncIterator[ChatResponseUpdate]:
                await self._wait(self.gate)
                extra = [Content.from_usage(usage)] if usage else []
                yield ChatResponseUpdate(role="assistant", contents=[*contents, *extra], finish_reason="tool_calls")

            return self._build_response_stream(_call_stream()) if stream else _call()

        if stream:

            async def _chunks() -> AsyncIterator[ChatResponseUpdate]:
                await self._wait(self.gate)
                if isinstance(step, BaseException):
                    raise step
                text = step.partial if isinstance(step, FailMidStream) else _text(step)
                words = text.split(" ")
                for index, word in enumerate(words):
                    last = index == len(words) - 1
                    extra = [Content.from_usage(usage)] if usage and last else []
                    yield ChatResponseUpdate(
                        role="assistant",
                        contents=[Content.from_text(("" if index == 0 else " ") + word), *extra],
                        finish_reason=_finish(step) if last else None,
                    )
                    if index == 0:
                        await self._wait(self.pause)
                if isinstance(step, FailMidStream):
                    raise ModelDown("the model stream broke off")

            return self._build_response_stream(_chunks())

        async def _respond() -> ChatResponse:
            await self._wait(self.gate)
            if isinstance(step, BaseException):
                raise step
            if isinstance(step, FailMidStream):
                raise ModelDown("the model call failed")
            return ChatResponse(
                messages=[Message(role="assistant", contents=[_text(step)])],
                finish_reason=_finish(step),
                usage_details=usage,
            )

        return _respond()


def _text(step: str | EndsWithout) -> str:
    return step.text if isinstance(step, EndsWithout) else step


def _finish(step: str | FailMidStream | EndsWithout) -> str | None:
    if isinstance(step, EndsWithout):
        return step.finish
    return None if isinstance(step, FailMidStream) else "stop"


def settings_for(
    backend: str,
    *,
    cosmos: Mapping[str, str] | None = None,
    postgres: LocalPostgres | None = None,
    tmp_path: Any = None,
    **extra: Any,
) -> Settings:
    """Settings for ``backend``; Cosmos tests get a fresh container, PostgreSQL tests a fresh database."""
    settings = Settings(backend=backend, **extra)
    if backend == "postgres":
        assert postgres is not None
        settings = replace(settings, postgres_dsn=postgres.create_database(), postgres_create_schema=True)
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


async def write_raw(store: SnapshotStore, session_id: str, body: dict[str, Any], owner: str = "") -> str:
    """Store ``body`` as the session's document as it is, bypassing the model (to plant corrupt data)."""
    return await store.raw.write(session_id, body, owner)


async def read_raw(store: SnapshotStore, session_id: str, owner: str = "") -> tuple[dict[str, Any], str] | None:
    """The stored object and ETag exactly as the backend holds them (no validation)."""
    return await store.raw.read(session_id, owner)


def settings_environment(backend: str, settings: Settings) -> dict[str, str]:
    """The app settings (environment variables) of a test's ``settings``, for a child process."""
    env = {"MAF_SESSION_BACKEND": backend, "MAF_SESSION_DIR": str(settings.session_dir)}
    if backend == "postgres":
        env |= {"POSTGRES_DSN": str(settings.postgres_dsn), "POSTGRES_CREATE_SCHEMA": "true"}
    if backend == "cosmos":
        env |= {
            "COSMOS_ENDPOINT": str(settings.cosmos_endpoint),
            "COSMOS_KEY": str(settings.cosmos_key),
            "COSMOS_DATABASE": settings.cosmos_database,
            "COSMOS_CONTAINER": settings.cosmos_container,
            "COSMOS_CREATE_CONTAINER": "true",
        }
    return env


def run_module(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module args`` as a fresh process (a cold instance) with the app settings ``env``."""
    from testkit.servers import ROOT, clean_env

    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_in_new_process(module: str, *args: str, env: dict[str, str]) -> dict[str, Any]:
    """Run ``python -m module args`` as a fresh process (a cold instance); return the JSON it printed last."""
    completed = run_module(module, *args, env=env)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def sse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """The ``(event, data)`` pairs of a whole Server-Sent Events body (keep-alive comments skipped)."""
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


@contextmanager
def devhost(settings_file: Path, *extra: str, output: list[str] | None = None) -> Iterator[str]:
    """The local host (``python -m stateful_agent.devhost``) in a new process on a free port, with
    ``settings_file``; yields its base URL once ``/api/health`` answers, and appends its output to ``output``."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stateful_agent.devhost",
            "--port",
            str(port),
            "--settings-file",
            str(settings_file),
            *extra,
        ],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                if httpx.get(f"{base}/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "local host did not start"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)
        if output is not None:
            output.append(process.stdout.read())
