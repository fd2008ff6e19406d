"""``AGENT_MCP_SERVERS``: the remote MCP servers whose tools the agent uses, as typed configuration.

The shape is VS Code's ``mcp.json`` for remote servers, ``{"servers": {"<name>": {"type": "http", "url": ...,
"headers": {...}}}}``, with the keys this app adds: ``allowedTools``, ``approval``, ``auth``,
``timeoutSeconds``, ``required`` and ``readOnly`` (see ``docs/tools.md``). Header values may reference app
settings as ``${env:NAME}``, so secrets stay in app settings (or Key Vault references), never in the JSON.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigurationError
from .settings import loopback

SETTING = "AGENT_MCP_SERVERS"
#: A server name: also the prefix of its tools' names when they clash, so it must be valid in a tool name.
SERVER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_KEY = re.compile(r"[a-z][A-Za-z0-9_]*")  # a JSON key of the configuration (union branches are not)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
#: Headers this app sets itself, or that would let configuration spoof the transport.
_RESERVED_HEADERS = {"content-type", "accept", "content-length", "host", "mcp-session-id", "mcp-protocol-version"}
#: Header names that carry a credential (besides any value taken from an app setting).
_CREDENTIAL_HEADERS = {"authorization", "proxy-authorization", "cookie"}
_CREDENTIAL_WORDS = ("key", "token", "secret", "password", "auth", "signature", "credential", "session")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ToolApproval(_Strict):
    """Per-tool approval: tools named in ``always`` wait for a person, those in ``never`` run at once; any other
    tool follows the server's default (``always``, or ``never`` for a ``readOnly`` server)."""

    always: tuple[str, ...] = ()
    never: tuple[str, ...] = ()


class ManagedIdentityAuth(_Strict):
    """An Entra token of the app's managed identity (``AZURE_CLIENT_ID``) for ``scope``."""

    type: Literal["managedIdentity"]
    scope: str = Field(min_length=1)


class CallerAuth(_Strict):
    """A token for ``scope`` (the server's own resource) on the caller's behalf: the caller's token, which Easy
    Auth validated for this app, is exchanged for it (OAuth 2.0 on-behalf-of) and never sent on."""

    type: Literal["caller"]
    scope: str = Field(min_length=1)


class McpServer(_Strict):
    """One remote MCP server (streamable HTTP)."""

    name: str = ""  # the key it is configured under
    type: Literal["http"] = "http"
    url: str
    headers: dict[str, str] = Field(default_factory=dict, repr=False)  # may hold secrets: never in a repr
    allowed_tools: tuple[str, ...] | None = Field(default=None, alias="allowedTools")
    approval: Literal["always", "never"] | ToolApproval | None = None
    auth: Annotated[ManagedIdentityAuth | CallerAuth, Field(discriminator="type")] | None = None
    timeout_seconds: float = Field(default=30, alias="timeoutSeconds", gt=0, le=600)
    required: bool = False
    read_only: bool = Field(default=False, alias="readOnly")

    def needs_approval(self, tool: str) -> bool:
        """Whether a call of ``tool`` (its name on the server, as ``normalized``) waits for a person's answer."""
        default = not self.read_only
        if self.approval is None:
            return default
        if isinstance(self.approval, str):
            return self.approval == "always"
        if tool in {normalized(name) for name in self.approval.always}:
            return True
        if tool in {normalized(name) for name in self.approval.never}:
            return False
        return default


class McpConfiguration(_Strict):
    servers: dict[str, McpServer]


def normalized(name: str) -> str:
    """A tool name as MAF exposes it: characters outside ``A-Za-z0-9_.-`` become ``-``."""
    return _UNSAFE.sub("-", name)


def parse_servers(
    text: str | None, environ: Mapping[str, str], *, auth_mode: str, exchange: bool = False
) -> tuple[McpServer, ...]:
    """The servers ``text`` (the setting's JSON) configures, with ``${env:NAME}`` references resolved;
    ``exchange`` says whether the app can exchange a caller's token (``AUTH_CLIENT_ID``, ``AUTH_TENANT_ID``).

    Raises:
        ConfigurationError: The JSON is malformed, a key is unknown, a value invalid, a URL not http(s), a
            referenced variable unset, a credential would cross the network in plain ``http://``, or ``caller``
            auth is used without ``AUTH_MODE=easyauth`` or a token exchange; the message names the server and
            the key.
    """
    if not text or not text.strip():
        return ()
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigurationError(f"{SETTING} is not valid JSON: {exc}.") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("servers"), dict):
        raise ConfigurationError(f'{SETTING} must be a JSON object {{"servers": {{"<name>": {{...}}}}}}.')
    unknown = sorted(set(raw) - {"servers"})
    if unknown:
        raise ConfigurationError(f"{SETTING}: unknown key {unknown[0]!r} (expected 'servers').")
    servers: list[McpServer] = []
    for name, body in raw["servers"].items():
        where = f"{SETTING}: server {name!r}"
        if not SERVER_NAME.fullmatch(name):
            raise ConfigurationError(f"{where}: a name is a letter, then up to 31 letters, digits, '_' or '-'.")
        if not isinstance(body, dict):
            raise ConfigurationError(f"{where} must be a JSON object.")
        if "name" in body:
            raise ConfigurationError(f"{where}: unknown key 'name' (the key it is listed under is its name).")
        try:
            server = McpServer.model_validate({**body, "name": name})
        except ValidationError as exc:
            raise ConfigurationError(f"{where}: {_first_problem(exc)}") from None
        servers.append(_checked(server, where, environ, auth_mode, exchange))
    return tuple(servers)


def _checked(server: McpServer, where: str, environ: Mapping[str, str], auth_mode: str, exchange: bool) -> McpServer:
    parts = urlsplit(server.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{where}: 'url' must be an absolute http(s) URL, not {server.url!r}.")
    if parts.username or parts.password:
        raise ConfigurationError(f"{where}: 'url' must not hold credentials; put them in 'headers' as ${{env:NAME}}.")
    plain = parts.scheme == "http" and not loopback(parts.hostname)
    if plain and server.auth is not None:
        raise ConfigurationError(
            f"{where}: 'auth' would send a token over plain http:// to {parts.hostname!r}; use an https:// 'url'."
        )
    headers: dict[str, str] = {}
    for header, value in server.headers.items():
        if not _HEADER_NAME.fullmatch(header) or header.lower() in _RESERVED_HEADERS:
            raise ConfigurationError(f"{where}: 'headers' cannot set {header!r}.")
        if header.lower() == "authorization" and server.auth is not None:
            raise ConfigurationError(f"{where}: 'headers' sets Authorization, which 'auth' already sends.")
        if plain and _credential(header, value):
            raise ConfigurationError(
                f"{where}: header {header!r} would send a credential over plain http:// to {parts.hostname!r}; "
                "use an https:// 'url'."
            )
        headers[header] = _ENV_REFERENCE.sub(
            functools.partial(_variable, where=where, header=header, environ=environ), value
        )
    if isinstance(server.auth, CallerAuth):
        if auth_mode != "easyauth":
            raise ConfigurationError(
                f"{where}: 'auth' type 'caller' needs AUTH_MODE=easyauth (a validated caller token)."
            )
        if not exchange:
            raise ConfigurationError(
                f"{where}: 'auth' type 'caller' exchanges the caller's token on its behalf, as the app "
                "registration: set AUTH_CLIENT_ID and AUTH_TENANT_ID."
            )
    for tool in (*(server.allowed_tools or ()), *_listed(server.approval)):
        if not tool:
            raise ConfigurationError(f"{where}: a tool name is empty.")
    return server.model_copy(update={"headers": headers})


def _credential(header: str, value: str) -> bool:
    """Whether a configured header carries a credential: a credential's name, or a value from an app setting
    (where secrets belong)."""
    name = header.lower()
    return name in _CREDENTIAL_HEADERS or any(word in name for word in _CREDENTIAL_WORDS) or "${env:" in value


def _listed(approval: Any) -> tuple[str, ...]:
    return (*approval.always, *approval.never) if isinstance(approval, ToolApproval) else ()


def _variable(match: re.Match[str], *, where: str, header: str, environ: Mapping[str, str]) -> str:
    value = environ.get(match.group(1), "")
    if not value.strip():
        raise ConfigurationError(f"{where}: header {header!r} references {match.group(1)}, which is not set.")
    if "\r" in value or "\n" in value:
        raise ConfigurationError(f"{where}: header {header!r} references {match.group(1)}, which holds a line break.")
    return value


def _first_problem(error: ValidationError) -> str:
    """The most specific problem, located by the keys of the JSON (not pydantic's union branch names)."""

    def keys(problem: Any) -> list[str]:
        return [str(part) for part in problem["loc"] if isinstance(part, int) or _KEY.fullmatch(str(part))]

    problem = max(error.errors(), key=lambda candidate: len(keys(candidate)))
    location = ".".join(keys(problem))
    if problem["type"] == "extra_forbidden":
        return f"unknown key {location!r}."
    if problem["type"] == "missing":
        return f"{location!r} is required."
    return f"{location!r}: {problem['msg']}."
