"""Tools from remote MCP servers (``AGENT_MCP_SERVERS``), on MAF's ``MCPStreamableHTTPTool``.

``ToolServers`` holds one connection per process and server (per user, for ``caller`` auth). A connection
opens on the first turn that offers the server's tools and is reused by every later turn; MAF keeps the
server's tool list (refreshed when the server announces a change). A connection that died (a call lost it, or
its session closed while idle) is reopened on its next use, before anything is sent. A
turn that calls no MCP tool sends nothing to any server. A server that cannot be reached when a turn starts
is left out of that turn (or, when ``required``, fails it with ``503 tool_server_unavailable`` before
anything is stored).

Calls of MCP tools are ordinary MAF function calls: approvals, ``tool_call``/``tool_result`` events, the
transcript and usage treat them as local tools. Each call is MAF's ``execute_tool`` span, with the server's
name; a call that fails, times out or returns an MCP error is the tool's error result for the model, and a
result longer than ``MAX_RESULT_CHARS`` is cut there.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Collection, Sequence
from typing import Any, Protocol

from agent_framework import Content, FunctionTool, MCPStreamableHTTPTool
from opentelemetry import trace

from ..errors import ToolServerUnavailableError, UnauthenticatedError
from .mcp_config import CallerAuth, ManagedIdentityAuth, McpServer, normalized
from .obo import TokenExchange

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

#: Most characters of one tool result that reach the model and the store; the rest is cut.
MAX_RESULT_CHARS = 32_000
#: Most users whose ``caller``-auth connections one process keeps open per server (least recently used go).
MAX_CALLER_CONNECTIONS = 64
#: A token (managed identity, or exchanged for a caller) is renewed this many seconds before it expires.
TOKEN_RENEWAL_SECONDS = 300
SERVER_ATTRIBUTE = "mcp.server.name"
#: Argument names MAF holds back from MCP servers because its own run context uses them; a remote tool that
#: declares one gets the model's value (``ServerTool.call_tool``), never the framework's.
FRAMEWORK_NAMES = (
    "chat_options",
    "conversation_id",
    "options",
    "response_format",
    "session",
    "thread",
    "tool_choice",
    "tools",
)
_JSON_VALUES = (str, int, float, bool, list, dict, type(None))


class TokenSource(Protocol):
    """What ``managedIdentity`` auth needs of a credential (``azure.identity.aio``'s satisfy it)."""

    async def get_token(self, *scopes: str) -> Any: ...

    async def close(self) -> None: ...


class ServerTool(MCPStreamableHTTPTool):
    """MAF's streamable HTTP MCP tool for one configured server: each call bounded in time and size, and
    named after its server on the ``execute_tool`` span."""

    def __init__(self, server: McpServer, headers: dict[str, str], prefix: str | None) -> None:
        super().__init__(
            server.name,
            server.url,
            tool_name_prefix=prefix,
            load_prompts=False,
            request_timeout=max(1, math.ceil(server.timeout_seconds)),
            allowed_tools=server.allowed_tools,
            approval_mode="always_require",  # decided per tool, each turn, by ``ToolServers.tools``
            static_headers=headers or None,
            additional_tool_argument_names={"*": FRAMEWORK_NAMES},  # filtered per tool in ``call_tool``
        )
        self.server = server
        self.identity = tuple(sorted(headers.items()))
        #: A call found the connection dead: it is reopened before the next call (``ToolServers`` opens a new
        #: one for the next turn), since MAF reopens only a connection whose stream it saw close.
        self.broken = False

    @property
    def dead(self) -> bool:
        """Whether this connection can no longer serve a call: a call found it lost, or its session closed
        while idle (the server went away between turns)."""
        return self.broken or not self.is_connected or session_closed(self)

    async def call_tool(self, tool_name: str, **kwargs: Any) -> str | list[Content]:
        """Call ``tool_name`` on the server; its text is cut at ``MAX_RESULT_CHARS``.

        Raises:
            TimeoutError: The call took longer than the server's ``timeoutSeconds``.
            ToolExecutionException: The call failed, or the server answered with an error.
        """
        trace.get_current_span().set_attribute(SERVER_ATTRIBUTE, self.server.name)
        declared = self._declared(tool_name)
        for name in FRAMEWORK_NAMES:  # the model's value for an argument the tool declares; nothing else
            if name in kwargs and (name not in declared or not isinstance(kwargs[name], _JSON_VALUES)):
                del kwargs[name]
        try:
            async with asyncio.timeout(self.server.timeout_seconds):
                if self.dead:  # reopen before sending: nothing of this call has reached the server yet
                    await self.connect(reset=True)
                    self.broken = False
                result = await super().call_tool(tool_name, **kwargs)
        except Exception as exc:
            if connection_lost(exc):
                self.broken = True
            if isinstance(exc, TimeoutError):
                raise TimeoutError(
                    f"The tool {tool_name!r} of MCP server {self.server.name!r} did not answer within "
                    f"{self.server.timeout_seconds:g} s."
                ) from None
            raise
        return bounded(result)

    def _declared(self, tool_name: str) -> set[str]:
        """The argument names the server's schema declares for ``tool_name`` (its name on the server)."""
        local = normalized(tool_name)
        if self.tool_name_prefix:
            local = f"{self.tool_name_prefix}_{local}"
        for function in self.functions:
            if function.name == local:
                return set(function.parameters().get("properties", {}))
        return set()


def session_closed(tool: MCPStreamableHTTPTool) -> bool:
    """Whether the MCP session of ``tool`` can no longer send requests: its transport closed (the server went
    away), though MAF still counts it connected and would fail every call with "Connection closed".

    No public API says so: this reads MAF's private connection and the ``mcp`` SDK's session dispatcher (whether
    it closed), here alone, guarded by a test. A shape it does not know counts as open.
    """
    connection = getattr(tool, "_connection", None)
    session = getattr(getattr(connection, "client", None), "_session", None) or getattr(connection, "session", None)
    return getattr(getattr(session, "_dispatcher", None), "_closed", False) is True


def connection_lost(exc: BaseException) -> bool:
    """Whether a failed call says the connection is gone (closed, refused, reset, timed out), rather than that
    the server answered with an error."""
    from anyio import BrokenResourceError, ClosedResourceError, EndOfStream
    from mcp import MCPError
    from mcp.types import CONNECTION_CLOSED

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MCPError):
            return current.error.code == CONNECTION_CLOSED
        if isinstance(current, (ClosedResourceError, BrokenResourceError, EndOfStream, OSError, TimeoutError)):
            return True
        inner = getattr(current, "inner_exception", None)
        current = current.__cause__ or current.__context__ or (inner if isinstance(inner, BaseException) else None)
    return False


def bounded(result: str | list[Content], limit: int = MAX_RESULT_CHARS) -> str | list[Content]:
    """``result`` with at most ``limit`` characters of text; a non-text part that does not fit is left out,
    and a note says what was cut."""
    if isinstance(result, str):
        return result if len(result) <= limit else result[:limit] + _cut_note(len(result) - limit)
    kept: list[Content] = []
    budget, cut = limit, 0
    for part in result:
        size = len(part.text or "") if part.type == "text" else len(str(part.uri or "")) + len(part.media_type or "")
        if size <= budget:
            kept.append(part)
            budget -= size
        elif part.type == "text" and budget > 0:
            kept.append(Content.from_text(str(part.text)[:budget]))
            cut += size - budget
            budget = 0
        else:
            cut += size
    if cut:
        kept.append(Content.from_text(_cut_note(cut)))
    return kept


def _cut_note(characters: int) -> str:
    return f"\n[result cut: {characters} more characters were left out]"


class ToolServers:
    """The configured MCP servers' connections in this process, and the tools they offer a turn."""

    def __init__(
        self,
        servers: Sequence[McpServer],
        *,
        client_id: str | None = None,
        credential: TokenSource | None = None,
        exchange: TokenExchange | None = None,
    ) -> None:
        self.servers = tuple(servers)
        self._client_id = client_id
        self._credential = credential
        self._owns_credential = credential is None
        #: Exchanges a caller's token for a server's (on-behalf-of); required by ``caller`` auth.
        self.exchange = exchange
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (token, expires at)
        self._caller_tokens: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()  # (server, owner)
        self._connections: OrderedDict[tuple[str, str], ServerTool] = OrderedDict()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}  # only for keys with a connection or a caller
        self._prefixed: set[str] = set()  # servers whose tool names clash: their tools are prefixed
        self._retiring: dict[asyncio.Task[None], ServerTool] = {}  # replaced connections, closed a little later

    async def tools(
        self, *, owner: str = "", bearer: str | None = None, local: Collection[str] = (), needed: Collection[str] = ()
    ) -> list[FunctionTool]:
        """The MCP tools to offer one turn: every reachable server's (opening connections on first use).

        ``owner`` and ``bearer`` are the caller and its validated bearer token (``caller`` auth: exchanged for
        the server's own token, never sent); ``local`` the
        agent's own tool names (a clash prefixes the server's tools); ``needed`` the names of tools whose
        approved calls this turn runs.

        Raises:
            ToolServerUnavailableError: A ``required`` server, or one holding a ``needed`` tool, cannot be
                reached; nothing was stored.
            UnauthenticatedError: A ``required`` server acts as the caller, and the request has no bearer token.
        """
        connected: list[ServerTool] = []
        missing: list[str] = []
        for server in self.servers:
            try:
                connected.append(await self._connection(server, owner, bearer))
            except UnauthenticatedError:
                if server.required:
                    raise
                missing.append(server.name)
            except ToolServerUnavailableError:
                if server.required:
                    raise
                missing.append(server.name)
        await self._resolve_clashes(connected, set(local))
        offered: list[FunctionTool] = []
        for tool in connected:
            for function in tool.functions:
                function.approval_mode = (
                    "always_require" if tool.server.needs_approval(_remote(function.name, tool)) else "never_require"
                )
                offered.append(function)
        names = {function.name for function in offered} | set(local)
        lost = sorted(name for name in needed if name not in names)
        if lost and missing:
            raise ToolServerUnavailableError(
                f"The approved call of {lost[0]!r} needs a tool server that cannot be reached now "
                f"({', '.join(missing)}); nothing was stored, send the same answer again."
            )
        return offered

    def connections(self) -> list[ServerTool]:
        """The open connections, least recently used first."""
        return list(self._connections.values())

    def held(self) -> dict[str, int]:
        """How many per-(server, user) entries this process holds: open connections, their locks, and caller
        tokens; each is bounded by ``MAX_CALLER_CONNECTIONS`` per server however many users come."""
        return {
            "connections": len(self._connections),
            "locks": len(self._locks),
            "caller_tokens": len(self._caller_tokens),
        }

    async def close(self) -> None:
        """Close every connection, and the credential this object created."""
        connections, self._connections = list(self._connections.values()), OrderedDict()
        for task, tool in list(self._retiring.items()):
            task.cancel()
            connections.append(tool)
        self._retiring.clear()
        for tool in connections:
            await _close_quietly(tool)
        self._locks.clear()
        self._caller_tokens.clear()
        if self._credential is not None and self._owns_credential:
            await self._credential.close()
            self._credential = None
        if self.exchange is not None:
            await self.exchange.close()

    async def _connection(self, server: McpServer, owner: str, bearer: str | None) -> ServerTool:
        key = (server.name, owner if isinstance(server.auth, CallerAuth) else "")
        if isinstance(server.auth, CallerAuth) and not bearer:  # every turn presents the caller's own token
            logger.info("MCP server %r acts as the caller, and this request has no bearer token", server.name)
            raise UnauthenticatedError(
                f"The tool server {server.name!r} acts as you: send your Microsoft Entra token as "
                "'Authorization: Bearer <token>'."
            )
        tool = self._connections.get(key)
        if tool is not None and not tool.dead and self._fresh(server, key):
            self._connections.move_to_end(key)
            return tool
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                headers = await self._headers(server, key, bearer)
                identity = tuple(sorted(headers.items()))
                tool = self._connections.get(key)
                if tool is not None and tool.identity == identity and not tool.dead:
                    self._connections.move_to_end(key)
                    return tool
                if tool is not None:  # a new token, or a connection that closed or broke: replace it
                    self._retire(self._connections.pop(key))
                tool = await self._open(server, headers)
                self._connections[key] = tool
                self._evict(server)
                return tool
        finally:
            if key not in self._connections and not lock.locked():
                self._locks.pop(key, None)  # no connection to guard: the map holds only live keys

    def _fresh(self, server: McpServer, key: tuple[str, str]) -> bool:
        """Whether the token a connection was opened with (if any) is still good for a while."""
        if isinstance(server.auth, CallerAuth):
            expires = self._caller_tokens.get(key, ("", 0.0))[1]
        elif isinstance(server.auth, ManagedIdentityAuth):
            expires = self._tokens.get(server.auth.scope, ("", 0.0))[1]
        else:
            return True
        return _lasts(expires)

    async def _open(self, server: McpServer, headers: dict[str, str]) -> ServerTool:
        tool = ServerTool(server, headers, server.name if server.name in self._prefixed else None)
        with _tracer.start_as_current_span(
            f"mcp connect {server.name}", kind=trace.SpanKind.CLIENT, attributes={SERVER_ATTRIBUTE: server.name}
        ) as span:
            try:
                async with asyncio.timeout(server.timeout_seconds):
                    await tool.connect()
            except Exception as exc:  # unreachable, refused, timed out, not an MCP server
                await _close_quietly(tool)
                reason = _reason(exc)
                span.set_status(trace.StatusCode.ERROR, reason)
                span.set_attribute("error.type", type(exc).__name__)
                logger.warning(
                    "MCP server %r cannot be reached (%s): %s",
                    server.name,
                    reason,
                    "the turn fails" if server.required else "its tools are left out of this turn",
                )
                raise ToolServerUnavailableError(
                    f"The tool server {server.name!r} cannot be reached; try again shortly.", internal=reason
                ) from None
            span.set_attribute("mcp.tools.count", len(tool.functions))
        return tool

    async def _headers(self, server: McpServer, key: tuple[str, str], bearer: str | None) -> dict[str, str]:
        headers = dict(server.headers)
        if isinstance(server.auth, CallerAuth):
            assert bearer is not None  # checked by _connection
            headers["Authorization"] = f"Bearer {await self._caller_token(server, key, bearer)}"
        elif isinstance(server.auth, ManagedIdentityAuth):
            headers["Authorization"] = f"Bearer {await self._token(server, server.auth.scope)}"
        return headers

    async def _token(self, server: McpServer, scope: str) -> str:
        token, expires = self._tokens.get(scope, ("", 0.0))
        if _lasts(expires):
            return token
        if self._credential is None:
            from azure.identity.aio import DefaultAzureCredential

            self._credential = DefaultAzureCredential(managed_identity_client_id=self._client_id)
        try:
            access = await self._credential.get_token(scope)
        except Exception as exc:  # no identity, or Entra cannot be reached
            logger.warning("No managed identity token for MCP server %r: %s", server.name, _reason(exc))
            raise ToolServerUnavailableError(
                f"The tool server {server.name!r} cannot be reached: no token for its scope.", internal=_reason(exc)
            ) from None
        self._tokens[scope] = (access.token, float(access.expires_on))
        return access.token

    async def _caller_token(self, server: McpServer, key: tuple[str, str], bearer: str) -> str:
        """A token for ``server``'s own scope on behalf of the caller (the caller's token goes only to the
        exchange, never to a server): one per user and server, exchanged again shortly before it expires."""
        assert isinstance(server.auth, CallerAuth)
        token, expires = self._caller_tokens.get(key, ("", 0.0))
        if _lasts(expires):
            self._caller_tokens.move_to_end(key)
            return token
        if self.exchange is None:
            raise ToolServerUnavailableError(
                f"The tool server {server.name!r} cannot be reached: no token exchange is configured.",
                internal="caller auth without an on-behalf-of exchange (AUTH_CLIENT_ID, AUTH_TENANT_ID)",
            )
        try:
            access = await self.exchange.exchange(bearer, server.auth.scope)
        except Exception as exc:  # no consent, an expired token, Entra cannot be reached
            reason = _reason(exc).replace(bearer, "<token>")
            logger.warning("No on-behalf-of token for MCP server %r: %s", server.name, reason)
            raise ToolServerUnavailableError(
                f"The tool server {server.name!r} cannot be reached: no token for its scope on your behalf.",
                internal=reason,
            ) from None
        self._caller_tokens[key] = (access.token, float(access.expires_on))
        self._caller_tokens.move_to_end(key)
        while len(self._caller_tokens) > MAX_CALLER_CONNECTIONS * max(1, len(self.servers)):
            self._caller_tokens.popitem(last=False)
        return access.token

    async def _resolve_clashes(self, connected: Sequence[ServerTool], local: set[str]) -> None:
        """Prefix the tools of every server whose tool names clash with a local tool's or another server's."""
        owners: dict[str, set[str]] = {}
        for tool in connected:
            for function in tool.functions:
                owners.setdefault(function.name, set()).add(tool.server.name)
        clashing = {
            server for name, servers in owners.items() if len(servers) > 1 or name in local for server in servers
        }
        for tool in connected:
            if tool.server.name in clashing and tool.tool_name_prefix is None:
                self._prefixed.add(tool.server.name)
                tool.tool_name_prefix = tool.server.name
                await tool.load_tools()

    def _evict(self, server: McpServer) -> None:
        users = [key for key in self._connections if key[0] == server.name]
        for key in users[: max(0, len(users) - MAX_CALLER_CONNECTIONS)]:
            self._retire(self._connections.pop(key))
            self._caller_tokens.pop(key, None)
            lock = self._locks.get(key)
            if lock is not None and not lock.locked():
                del self._locks[key]

    def _retire(self, tool: ServerTool) -> None:
        """Close a replaced connection once calls that may still use it had their time."""

        async def later() -> None:
            await asyncio.sleep(tool.server.timeout_seconds + 1)
            await _close_quietly(tool)

        task = asyncio.get_running_loop().create_task(later())
        self._retiring[task] = tool
        task.add_done_callback(lambda done: self._retiring.pop(done, None))


def _lasts(expires: float) -> bool:
    """Whether a token that expires at ``expires`` (seconds since the epoch) needs no renewal yet."""
    return expires - time.time() > TOKEN_RENEWAL_SECONDS


def _remote(name: str, tool: ServerTool) -> str:
    """The tool's name on its server (as MAF normalizes it), from the name the model sees."""
    prefix = tool.tool_name_prefix
    return name[len(prefix) + 1 :] if prefix and name.startswith(f"{prefix}_") else name


def _reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    cause = exc.__cause__ or exc.__context__
    text = f"{type(exc).__name__}: {exc}"
    if cause is not None and cause is not exc and not str(exc):
        text += f" ({type(cause).__name__}: {cause})"
    return text[:300]


async def _close_quietly(tool: ServerTool) -> None:
    """Close a connection; one that is already broken may fail to close (MAF's close can even surface the
    cancellation of its own subscription task), which is only worth a debug line."""
    try:
        await tool.close()
    except (Exception, asyncio.CancelledError) as exc:
        task = asyncio.current_task()
        if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
            raise  # this task itself is being cancelled
        logger.debug("Closing MCP server %r: %s", tool.server.name, _reason(exc))
