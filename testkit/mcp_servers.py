"""Real MCP servers (the official ``mcp`` SDK's ``MCPServer``, streamable HTTP) on loopback, for tests and
benchmarks: each runs under uvicorn in a thread of its own, records every HTTP request it answers (method,
JSON-RPC method, ``Authorization`` header) and every tool call, and can be stopped and started again on the
same port.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server import MCPServer

from .servers import free_port


@dataclass
class Seen:
    """One HTTP request the server answered."""

    method: str
    rpc: str | None  # the JSON-RPC method of a POST (``tools/call``, ``tools/list``, ...)
    authorization: str | None
    tool: str | None = None


@dataclass
class ToolServer:
    """An MCP server over streamable HTTP at ``url``; ``calls`` lists ``(tool, arguments, authorization)``."""

    name: str
    tools: dict[str, Callable[..., Any]]
    token: str | None = None  # when set, every request must carry ``Authorization: Bearer <token>``
    accept: Callable[[str | None], bool] | None = None  # or this decides which Authorization headers pass
    port: int = field(default_factory=free_port)
    seen: list[Seen] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any], str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def requests(self, rpc: str | None = None) -> list[Seen]:
        """The requests seen (of one JSON-RPC method, when given)."""
        return [s for s in self.seen if rpc is None or s.rpc == rpc]

    def add_tool(self, name: str, function: Callable[..., Any]) -> None:
        """Add a tool to the running server and announce it (``notifications/tools/list_changed``)."""
        from mcp.server.subscriptions import ToolsListChanged

        self.tools[name] = function
        self._mcp.add_tool(self._recorded(name, function), name=name)
        asyncio.run_coroutine_threadsafe(self._bus.publish(ToolsListChanged()), self._loop).result(timeout=10)

    def _app(self) -> Any:
        from mcp.server.subscriptions import InMemorySubscriptionBus

        self._bus = InMemorySubscriptionBus()
        server = self._mcp = MCPServer(self.name, subscriptions=self._bus)
        for tool_name, function in self.tools.items():
            server.add_tool(self._recorded(tool_name, function), name=tool_name)
        inner = server.streamable_http_app(streamable_http_path="/mcp")
        owner = self

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await inner(scope, receive, send)
                return
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            authorization = headers.get("authorization")
            body = b""
            if scope["method"] == "POST":
                more = True
                while more:
                    message = await receive()
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
            rpc, tool = _rpc(body)
            owner.seen.append(Seen(scope["method"], rpc, authorization, tool))
            allowed = (
                owner.accept(authorization)
                if owner.accept
                else (owner.token is None or authorization == f"Bearer {owner.token}")
            )
            if not allowed:
                await send(
                    {"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]}
                )
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
            replayed = False

            async def replay() -> dict[str, Any]:
                nonlocal replayed
                if not replayed and scope["method"] == "POST":
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await inner(scope, replay, send)

        self._lifespan_app = inner
        return app

    def _recorded(self, tool_name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        import functools
        import inspect

        owner = self

        @functools.wraps(function)
        async def recorded(*args: Any, **kwargs: Any) -> Any:
            authorization = next(
                (s.authorization for s in reversed(owner.seen) if s.rpc == "tools/call" and s.tool == tool_name), None
            )
            owner.calls.append((tool_name, dict(kwargs), authorization))
            result = function(*args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        recorded.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
        return recorded

    def start(self) -> ToolServer:
        """Serve (again) on this server's port; returns once it answers."""
        app = self._app()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"MCP server {self.name} did not start")
            time.sleep(0.02)
        return self

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        assert self._server is not None
        await self._server.serve()

    def stop(self) -> None:
        """Stop serving (open connections are closed); ``start`` serves again on the same port."""
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=20)
        self._server = self._thread = None

    def __enter__(self) -> ToolServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _rpc(body: bytes) -> tuple[str | None, str | None]:
    try:
        message = json.loads(body) if body else None
    except ValueError:
        return None, None
    if not isinstance(message, dict):
        return None, None
    params = message.get("params") if isinstance(message.get("params"), dict) else {}
    return message.get("method"), params.get("name") if message.get("method") == "tools/call" else None


@dataclass
class IssuedToken:
    token: str
    expires_on: int


@dataclass
class TokenIssuer:
    """An on-behalf-of token exchange stand-in (Entra cannot be reached here): for a caller's token and a scope,
    a token naming that scope and a fingerprint of the caller's token, valid for ``lifetime`` seconds.
    ``exchanges`` lists each ``(caller token, scope)`` it was asked for."""

    lifetime: int = 3600
    exchanges: list[tuple[str, str]] = field(default_factory=list)
    closed: bool = False

    @staticmethod
    def token_for(assertion: str, scope: str) -> str:
        """The token this issuer gives ``assertion``'s user for ``scope``."""
        import hashlib

        return f"obo|{scope}|{hashlib.sha256(assertion.encode()).hexdigest()[:12]}"

    async def exchange(self, assertion: str, scope: str) -> IssuedToken:
        self.exchanges.append((assertion, scope))
        return IssuedToken(self.token_for(assertion, scope), int(time.time()) + self.lifetime)

    async def close(self) -> None:
        self.closed = True
