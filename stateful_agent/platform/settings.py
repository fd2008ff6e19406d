"""Application settings: each declared once, on the field of ``Settings`` that holds it.

A field's ``setting(...)`` names its app setting (the environment variable) and says what it means, its
default, the values it takes and whether it is local-only (never deployed by ``infra/``). ``load_settings``
parses them all from those declarations; ``DECLARATIONS`` lists them for the documentation and the tests
that keep ``docs/settings.md``, ``local.settings.sample.json`` and the Bicep app settings in step.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from ..errors import ConfigurationError

AuthMode = Literal["none", "easyauth", "header"]
Backend = Literal["cosmos", "postgres", "file", "memory"]
CompactionStrategy = Literal["messages", "tokens", "none"]
ModelProvider = Literal["azure_openai", "openai", "echo"]
BACKENDS: tuple[Backend, ...] = ("cosmos", "postgres", "file", "memory")
AUTH_MODES: tuple[AuthMode, ...] = ("none", "easyauth", "header")
COMPACTION_STRATEGIES: tuple[CompactionStrategy, ...] = ("messages", "tokens", "none")
MODEL_PROVIDERS: tuple[ModelProvider, ...] = ("azure_openai", "openai", "echo")
DEFAULT_INSTRUCTIONS = "You are a helpful assistant. Answer concisely."
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
_MB = 1024 * 1024


@dataclass(frozen=True)
class Setting:
    """One app setting: its name, what it means, its default, the values it takes, where it applies."""

    name: str
    description: str
    kind: Literal["text", "secret", "flag", "integer", "choice", "path"] = "text"
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    #: Integer settings held in another unit (``SESSION_CACHE_MB`` is held as bytes).
    scale: int = 1
    #: Never set in Azure: keys, local-only options, the OpenAI-compatible endpoint.
    local_only: bool = False
    #: The ``Settings`` attribute; ``None`` for settings a library reads from the environment itself.
    field: str | None = None


def setting(name: str, description: str, kind: str = "text", default: Any = None, **options: Any) -> Any:
    """A ``Settings`` field holding app setting ``name`` (``default`` in the setting's own unit)."""
    declared = Setting(name, description, kind, default, **options)  # type: ignore[arg-type]
    held = default * declared.scale if kind == "integer" and default is not None else default
    if kind == "path":
        held = Path(default)
    return dataclasses.field(default=held, metadata={"setting": declared})


@dataclass(frozen=True)
class Settings:
    """Validated application settings."""

    auth_mode: AuthMode = setting(
        "AUTH_MODE",
        "Who owns a session: `none` (function keys, sessions shared), `easyauth` (App Service Authentication: "
        "each user their own) or `header` (a trusted backend names the user).",
        "choice",
        "none",
        choices=AUTH_MODES,
    )
    auth_user_header: str = setting(
        "AUTH_USER_HEADER",
        "With `AUTH_MODE=header`: the header a trusted backend names the user in.",
        "text",
        "X-User-Id",
    )
    easyauth_local_headers: bool = setting(
        "EASYAUTH_LOCAL_HEADERS",
        "`true` trusts `X-MS-CLIENT-PRINCIPAL-*` headers without Easy Auth, for local runs; a "
        "`configuration_error` when the app runs in Azure.",
        "flag",
        False,
        local_only=True,
    )
    #: Platform facts (set by App Service, not app settings): Easy Auth is on; the app runs in Azure; its
    #: default host name (``WEBSITE_HOSTNAME``).
    easyauth_enabled: bool = False
    in_azure: bool = False
    website_hostname: str | None = None
    public_base_url: str | None = setting(
        "PUBLIC_BASE_URL",
        "The public URL the app's routes are served under, route prefix included, e.g. "
        "`https://agents.contoso.com/api` (a custom domain or a gateway); unset: `https://<WEBSITE_HOSTNAME>/api`. "
        "URLs the app publishes (the A2A agent card) are built from it, never from request headers.",
    )
    backend: Backend = setting(
        "MAF_SESSION_BACKEND",
        "The session store: `cosmos`, `postgres`, `file` or `memory`.",
        "choice",
        "file",
        choices=BACKENDS,
    )
    session_dir: Path = setting(
        "MAF_SESSION_DIR", "Directory of the `file` store.", "path", ".sessions", local_only=True
    )
    cosmos_endpoint: str | None = setting(
        "COSMOS_ENDPOINT",
        "Cosmos DB account endpoint, e.g. `https://<account>.documents.azure.com:443/`; required for `cosmos`.",
    )
    cosmos_key: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata={
            "setting": Setting(
                "COSMOS_KEY",
                "Account key, for emulators only; unset = Microsoft Entra ID (managed identity in Azure, `az login` "
                "locally).",
                "secret",
                local_only=True,
            )
        },
    )
    cosmos_database: str = setting("COSMOS_DATABASE", "Cosmos DB database name.", "text", "agents")
    cosmos_container: str = setting(
        "COSMOS_CONTAINER",
        "Cosmos DB container; hierarchical partition key `[/owner, /session_id]` (checked on first use).",
        "text",
        "conversations",
    )
    cosmos_create_container: bool = setting(
        "COSMOS_CREATE_CONTAINER",
        "`true` creates the database and container on first use (local emulators; in Azure `infra/` does).",
        "flag",
        False,
        local_only=True,
    )
    #: May hold a password: kept out of ``repr`` (and never logged).
    postgres_dsn: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata={
            "setting": Setting(
                "POSTGRES_DSN",
                "For `postgres`: a libpq connection string (`host=... dbname=... user=...`) or `postgresql://` URI; "
                "what it leaves out comes from `PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`, `PGPASSWORD`, `PGSSLMODE`. "
                "No password and an Azure Database for PostgreSQL host = Microsoft Entra ID "
                "([PostgreSQL](postgres.md)).",
                "secret",
            )
        },
    )
    postgres_create_schema: bool = setting(
        "POSTGRES_CREATE_SCHEMA",
        "`true` creates or upgrades the PostgreSQL schema on first use (local servers); otherwise run "
        "`python -m stateful_agent.stores.postgres migrate`.",
        "flag",
        False,
        local_only=True,
    )
    postgres_pool_size: int = setting(
        "POSTGRES_POOL_SIZE",
        "Most PostgreSQL connections one instance opens (the server's `max_connections` bounds instances x this).",
        "integer",
        5,
        minimum=1,
        maximum=100,
    )
    session_ttl_seconds: int | None = setting(
        "SESSION_TTL_SECONDS",
        "A session is deleted this long after its last turn: by Cosmos DB's TTL (needs TTL on the container); in "
        "PostgreSQL it reads as absent at once and `cleanup` deletes it. Unset or `-1` = keep.",
        "integer",
        None,
        minimum=-1,
    )
    max_message_bytes: int = setting(
        "MAX_MESSAGE_BYTES", "Largest user message, in UTF-8 bytes.", "integer", 32 * 1024, minimum=1
    )
    max_snapshot_bytes: int = setting(
        "MAX_SNAPSHOT_BYTES",
        "Largest snapshot document written, in bytes (Cosmos DB caps items at 2 MB).",
        "integer",
        1_572_864,
        minimum=1024,
        maximum=2 * _MB,
    )
    session_cache_bytes: int = setting(
        "SESSION_CACHE_MB",
        "MB of stored sessions an instance keeps restored for their next turn, reused only while the stored messages "
        "are exactly the ones it wrote; `0` = off.",
        "integer",
        32,
        minimum=0,
        maximum=4096,
        scale=_MB,
    )
    compaction_strategy: CompactionStrategy = setting(
        "COMPACTION_STRATEGY",
        "What bounds the live window ([Sessions that stay small](architecture.md#sessions-that-stay-small)).",
        "choice",
        "messages",
        choices=COMPACTION_STRATEGIES,
    )
    compaction_max_messages: int = setting(
        "COMPACTION_MAX_MESSAGES",
        "With `messages`: most messages a prompt holds; past it the oldest are archived down to half.",
        "integer",
        40,
        minimum=2,
    )
    compaction_token_budget: int = setting(
        "COMPACTION_TOKEN_BUDGET",
        "With `tokens`: most tokens a prompt holds (MAF's 4-characters-per-token estimate); past it the oldest are "
        "archived down to half.",
        "integer",
        8000,
        minimum=100,
    )
    idempotency_keys: int = setting(
        "IDEMPOTENCY_KEYS",
        "How many recent `Idempotency-Key`s a session remembers.",
        "integer",
        50,
        minimum=1,
        maximum=1000,
    )
    model_provider: ModelProvider = setting(
        "MODEL_PROVIDER",
        "`azure_openai`, `openai` or `echo`; unset = `azure_openai` with `AZURE_OPENAI_ENDPOINT`, else `openai` "
        "with `OPENAI_MODEL`, else `echo` (offline, with a loud warning in the log).",
        "choice",
        "echo",
        choices=MODEL_PROVIDERS,
    )
    azure_openai_endpoint: str | None = setting(
        "AZURE_OPENAI_ENDPOINT", "Azure OpenAI endpoint, e.g. `https://<resource>.openai.azure.com/`."
    )
    azure_openai_model: str | None = setting("AZURE_OPENAI_MODEL", "The Azure OpenAI chat **deployment** name.")
    azure_openai_api_key: str | None = setting(
        "AZURE_OPENAI_API_KEY", "Azure OpenAI key; unset = Microsoft Entra ID.", "secret", local_only=True
    )
    azure_openai_api_version: str | None = setting(
        "AZURE_OPENAI_API_VERSION", "Azure OpenAI API version; unset = MAF's Chat Completions default."
    )
    openai_base_url: str | None = setting(
        "OPENAI_BASE_URL",
        "Any OpenAI-compatible Chat Completions endpoint, e.g. Ollama `http://127.0.0.1:11434/v1`, vLLM, LM Studio, "
        "llama.cpp; unset = api.openai.com.",
        local_only=True,
    )
    openai_api_key: str | None = setting(
        "OPENAI_API_KEY", "Key of that endpoint; optional with `OPENAI_BASE_URL`.", "secret", local_only=True
    )
    openai_model: str | None = setting("OPENAI_MODEL", "Model name at that endpoint.", local_only=True)
    model_timeout_seconds: int = setting(
        "MODEL_TIMEOUT_SECONDS",
        "Seconds one model request may take, or stay silent mid-stream, before it fails.",
        "integer",
        60,
        minimum=1,
        maximum=600,
    )
    model_max_retries: int = setting(
        "MODEL_MAX_RETRIES",
        "How often the OpenAI SDK retries a failed model request. With the defaults a hung model fails after at most "
        "3 x 60 s plus back-off, inside the 5-minute `functionTimeout`, as `502 model_error`, not a host timeout.",
        "integer",
        2,
        minimum=0,
        maximum=10,
    )
    model_max_output_tokens: int | None = setting(
        "MODEL_MAX_OUTPUT_TOKENS",
        "Most tokens one model call may write, through MAF's `max_tokens` option (Chat Completions "
        "`max_completion_tokens`); a reply cut there finishes with `length` and is stored. Unset = the model's own "
        "limit, so a model that never stops writes until its context is full, at your cost (Bicep "
        "`modelMaxOutputTokens`, 0 = unset).",
        "integer",
        None,
        minimum=1,
        maximum=1_000_000,
    )
    sse_keepalive_seconds: int = setting(
        "SSE_KEEPALIVE_SECONDS",
        "Seconds of model silence before a stream sends an SSE keep-alive comment (the host drops a stream idle "
        "for about 240 s).",
        "integer",
        15,
        minimum=1,
        maximum=230,
    )
    chat_ui: bool = setting(
        "CHAT_UI",
        "Serve the [chat page](chat-page.md) at `/api/ui`; `false` answers it with `404 chat_ui_disabled`.",
        "flag",
        True,
    )
    agent_name: str = setting("AGENT_NAME", "The agent's name.", "text", "assistant")
    agent_tools: str = setting(
        "AGENT_TOOLS",
        "The agent's tools: comma-separated `module:attribute` references, each a MAF tool, a plain function or a "
        "list of them (e.g. `samples.tools:TOOLS`); see [Tools](tools.md).",
        "text",
        "",
    )
    agent_mcp_servers: str | None = setting(
        "AGENT_MCP_SERVERS",
        "Remote MCP servers whose tools the agent uses, as JSON in VS Code's `mcp.json` shape plus approvals, auth "
        "and timeouts; see [Tools](tools.md#tools-from-mcp-servers).",
    )
    #: ``AGENT_MCP_SERVERS``, parsed and checked (``platform.mcp_config``).
    mcp_servers: tuple[Any, ...] = ()
    agent_instructions: str = setting(
        "AGENT_INSTRUCTIONS", "The agent's system instructions.", "text", DEFAULT_INSTRUCTIONS
    )
    azure_client_id: str | None = setting(
        "AZURE_CLIENT_ID", "Client id of the user-assigned managed identity (Azure only)."
    )
    auth_client_id: str | None = setting(
        "AUTH_CLIENT_ID",
        "With Easy Auth: the app registration's client id. MCP servers with `auth: caller` get tokens on the "
        "caller's behalf as this registration ([Tools](tools.md#servers-that-act-as-the-caller)).",
    )
    auth_tenant_id: str | None = setting("AUTH_TENANT_ID", "The Microsoft Entra tenant of that app registration.")
    auth_client_secret: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata={
            "setting": Setting(
                "AUTH_CLIENT_SECRET",
                "A client secret of that app registration, for local runs only; in Azure the managed identity "
                "is its credential (a federated identity credential), never a secret.",
                "secret",
                local_only=True,
            )
        },
    )

    def published_base(self) -> str | None:
        """The public base URL of the app's routes (``PUBLIC_BASE_URL``, else ``WEBSITE_HOSTNAME``'s with the
        route prefix); ``None`` where neither is known (a local host)."""
        if self.public_base_url:
            return self.public_base_url
        if not self.website_hostname:
            return None
        host = self.website_hostname
        scheme = "http" if loopback(urlsplit(f"//{host}").hostname or "") else "https"
        return "/".join(part for part in (f"{scheme}://{host}", route_prefix()) if part)

    @property
    def model_label(self) -> str:
        """What ``/api/health`` and the log call the model."""
        if self.model_provider == "azure_openai":
            return f"azure_openai:{self.azure_openai_model}"
        if self.model_provider == "openai":
            return f"openai:{self.openai_model}"
        return "echo (offline, no model configured)"

    @property
    def model_endpoint(self) -> str:
        """Where model calls go, for the log."""
        if self.model_provider == "azure_openai":
            return str(self.azure_openai_endpoint)
        if self.model_provider == "openai":
            return self.openai_base_url or "https://api.openai.com/v1"
        return "echo (in process)"


#: Settings that OpenTelemetry's exporters (and MAF) read from the environment themselves.
TELEMETRY_SETTINGS = (
    Setting(
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "Export traces, metrics and logs to Application Insights, with Microsoft Entra ID (never a key).",
    ),
    Setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "Export them over OTLP/HTTP, e.g. `http://127.0.0.1:4318` (the other `OTEL_EXPORTER_OTLP_*` variables apply).",
        local_only=True,
    ),
    Setting("OTEL_EXPORTER_OTLP_PROTOCOL", "OTLP protocol; only `http/protobuf` is installed.", local_only=True),
    Setting("OTEL_SERVICE_NAME", "The service name in telemetry.", default="stateful-agent"),
    Setting(
        "ENABLE_SENSITIVE_DATA",
        "MAF's setting: `true` records message and tool contents in spans (development only).",
        "flag",
        False,
    ),
)

#: Every setting the app reads, in the order of ``Settings`` (then telemetry's).
DECLARATIONS: tuple[Setting, ...] = (
    *(
        dataclasses.replace(f.metadata["setting"], field=f.name)
        for f in dataclasses.fields(Settings)
        if "setting" in f.metadata
    ),
    *TELEMETRY_SETTINGS,
)
#: Setting name -> description.
SETTINGS: dict[str, str] = {declared.name: declared.description for declared in DECLARATIONS}
#: Settings never set in Azure; ``infra/`` sets every other one.
LOCAL_ONLY_SETTINGS = frozenset(declared.name for declared in DECLARATIONS if declared.local_only)


def reference() -> str:
    """The settings reference as a Markdown table, from ``DECLARATIONS`` (``docs/settings.md`` holds it)."""
    rows = ["| Setting | Default | Values | Azure | Meaning |", "|---|---|---|---|---|"]
    for declared in DECLARATIONS:
        default = declared.default
        shown = (
            ""
            if default is None or default == ""
            else f"`{str(default).lower() if isinstance(default, bool) else default}`"
        )
        if declared.choices:
            values = ", ".join(f"`{choice}`" for choice in declared.choices)
        elif declared.kind == "flag":
            values = "`true`, `false`"
        elif declared.kind == "integer":
            low = "" if declared.minimum is None else declared.minimum
            high = "" if declared.maximum is None else declared.maximum
            values = f"{low}–{high}" if high != "" else f"≥ {low}"
        else:
            values = "secret" if declared.kind == "secret" else ""
        azure = "local only" if declared.local_only else "set by `infra/`"
        rows.append(f"| `{declared.name}` | {shown} | {values} | {azure} | {declared.description} |")
    return "\n".join(rows) + "\n"


def loopback(host: str) -> bool:
    """Whether ``host`` is this machine (where plain ``http://`` crosses no network)."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every declared setting.

    Raises:
        ConfigurationError: A setting is missing or invalid (the message names it).
    """
    env = _Env(os.environ if environ is None else environ)
    values = {f.name: env.read(f.metadata["setting"]) for f in dataclasses.fields(Settings) if "setting" in f.metadata}
    backend = values["backend"]
    cosmos_endpoint = values["cosmos_endpoint"]
    if backend == "cosmos" and not cosmos_endpoint:
        raise ConfigurationError("COSMOS_ENDPOINT is required when MAF_SESSION_BACKEND=cosmos.")
    if cosmos_endpoint and not cosmos_endpoint.startswith(("https://", "http://")):
        raise ConfigurationError("COSMOS_ENDPOINT must be an http(s) URL.")
    if backend == "postgres":
        _check_conninfo(values["postgres_dsn"] or "")
    ttl = values["session_ttl_seconds"]
    if ttl == 0:
        raise ConfigurationError("SESSION_TTL_SECONDS must be -1 (keep forever) or a positive number of seconds.")
    values["session_ttl_seconds"] = None if ttl in (None, -1) else ttl

    provider = env.choice("MODEL_PROVIDER", MODEL_PROVIDERS, default=None) or _infer_provider(env)
    if provider == "azure_openai":
        env.require("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_MODEL", reason="MODEL_PROVIDER=azure_openai")
    elif provider == "openai":
        env.require("OPENAI_MODEL", reason="MODEL_PROVIDER=openai")
        if not env.text("OPENAI_BASE_URL") and not env.text("OPENAI_API_KEY"):
            raise ConfigurationError(
                "MODEL_PROVIDER=openai needs OPENAI_API_KEY, or OPENAI_BASE_URL for a local server."
            )
    values["model_provider"] = provider
    if not _HEADER_NAME.fullmatch(values["auth_user_header"]):
        raise ConfigurationError(f"AUTH_USER_HEADER={values['auth_user_header']!r} is not an HTTP header name.")
    if values["agent_mcp_servers"]:
        from .mcp_config import parse_servers  # pydantic: loaded only when servers are configured

        values["mcp_servers"] = parse_servers(
            values["agent_mcp_servers"],
            env.environ,
            auth_mode=values["auth_mode"],
            exchange=bool(values["auth_client_id"] and values["auth_tenant_id"]),
        )
    public = values["public_base_url"]
    if public is not None:
        parts = urlsplit(public)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
            raise ConfigurationError(f"PUBLIC_BASE_URL must be an absolute http(s) URL, not {public!r}.")
        values["public_base_url"] = public.rstrip("/")
    return Settings(
        **values,
        easyauth_enabled=(env.text("WEBSITE_AUTH_ENABLED") or "").lower() == "true",
        in_azure=bool(env.text("WEBSITE_INSTANCE_ID") or env.text("WEBSITE_SITE_NAME")),
        website_hostname=env.text("WEBSITE_HOSTNAME"),
    )


def load_local_settings(path: Path) -> int:
    """Copy ``Values`` of a ``local.settings.json`` into the environment (variables already set win); return
    how many were set. A missing file sets none."""
    if not path.is_file():
        return 0
    values = json.loads(path.read_text()).get("Values", {})
    fresh = {k: str(v) for k, v in values.items() if k not in os.environ}
    os.environ.update(fresh)
    return len(fresh)


def anonymous_session_routes(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the session routes skip function keys: with ``AUTH_MODE=easyauth`` Easy Auth authenticates
    the callers, who hold no keys. Read when the app is indexed; an invalid value keeps function keys (and
    is reported as ``configuration_error`` on the first request)."""
    value = (os.environ if environ is None else environ).get("AUTH_MODE", "")
    return value.strip().lower() == "easyauth"


APP_ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def route_prefix(host_json: Path = APP_ROOT / "host.json") -> str:
    """The HTTP route prefix the Functions host puts before every route (``extensions.http.routePrefix`` in
    ``host.json``, which owns it; ``api`` when unset)."""
    try:
        return str(json.loads(host_json.read_text())["extensions"]["http"]["routePrefix"]).strip("/")
    except (OSError, KeyError, TypeError, ValueError):
        return "api"


def _check_conninfo(conninfo: str) -> None:
    """Raise ``ConfigurationError`` when POSTGRES_DSN does not parse (without echoing it: it may hold a
    password). Needs psycopg, which only the postgres backend imports."""
    try:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError as exc:
        raise ConfigurationError("MAF_SESSION_BACKEND=postgres needs psycopg (requirements.txt).") from exc
    try:
        conninfo_to_dict(conninfo)
    except ProgrammingError:
        raise ConfigurationError("POSTGRES_DSN is not a libpq connection string or postgresql:// URI.") from None


def _infer_provider(env: _Env) -> str:
    if env.text("AZURE_OPENAI_ENDPOINT"):
        return "azure_openai"
    if env.text("OPENAI_MODEL"):
        return "openai"
    return "echo"


class _Env:
    """Typed access to raw string settings; blank values count as unset."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def read(self, declared: Setting) -> Any:
        """A declared setting's value, parsed and checked (its default when unset)."""
        if declared.kind == "choice":
            return self.choice(declared.name, declared.choices, default=declared.default)
        if declared.kind == "flag":
            return self.flag(declared.name, declared.default)
        if declared.kind == "integer":
            value = self.integer(
                declared.name, default=declared.default, minimum=declared.minimum, maximum=declared.maximum
            )
            return value * declared.scale if value is not None else None
        if declared.kind == "path":
            return Path(self.text(declared.name) or declared.default)
        return self.text(declared.name) or declared.default

    def text(self, name: str) -> str | None:
        value = self.environ.get(name, "").strip()
        return value or None

    def require(self, *names: str, reason: str) -> None:
        missing = [name for name in names if not self.text(name)]
        if missing:
            raise ConfigurationError(f"{', '.join(missing)} must be set when {reason}.")

    def choice(self, name: str, allowed: tuple[str, ...], *, default: str | None) -> str | None:
        value = self.text(name)
        if value is None:
            return default
        if value.lower() not in allowed:
            raise ConfigurationError(f"{name}={value!r} is not one of: {', '.join(allowed)}.")
        return value.lower()

    def flag(self, name: str, default: bool = False) -> bool:
        value = (self.text(name) or str(default)).lower()
        if value not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigurationError(f"{name}={value!r} must be true or false.")
        return value in ("true", "1", "yes")

    def integer(self, name: str, *, default: int | None, minimum: int | None, maximum: int | None = None) -> int | None:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"{name}={raw!r} is not an integer.") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise ConfigurationError(f"{name}={value} must be {bounds}.")
        return value
