"""Application settings: every name the app reads, parsed and validated once.

``SETTINGS`` is the single source of truth for the setting names. The sample
``local.settings.sample.json`` and the Bicep app settings are tested against it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigurationError

BACKENDS = ("cosmos", "postgres", "file", "memory")
AUTH_MODES = ("none", "easyauth", "header")
COMPACTION_STRATEGIES = ("messages", "tokens", "none")
MODEL_PROVIDERS = ("azure_openai", "openai", "echo")

#: Setting name -> one-line description. Defaults live in ``load_settings``.
SETTINGS: dict[str, str] = {
    "AUTH_MODE": "Who owns a session: none (function keys, shared) | easyauth (App Service Authentication) | header.",
    "AUTH_USER_HEADER": "With AUTH_MODE=header: the header a trusted caller names the user in (default X-User-Id).",
    "EASYAUTH_LOCAL_HEADERS": "true = trust X-MS-CLIENT-PRINCIPAL-* headers without Easy Auth (never in Azure).",
    "MAF_SESSION_BACKEND": "Session store: cosmos | postgres | file | memory (default file).",
    "MAF_SESSION_DIR": "Directory of the file store (default ./.sessions).",
    "COSMOS_ENDPOINT": "Cosmos DB account endpoint, e.g. https://<account>.documents.azure.com:443/.",
    "COSMOS_KEY": "Account key, for emulators only; unset = Microsoft Entra ID (managed identity).",
    "COSMOS_DATABASE": "Cosmos database name (default agents).",
    "COSMOS_CONTAINER": "Cosmos container name, partition key [/owner, /session_id] (default conversations).",
    "COSMOS_CREATE_CONTAINER": "true = create database and container on first use (local emulators only).",
    "POSTGRES_DSN": "libpq connection string or URI; unset = the PG* variables. No password = Entra ID in Azure.",
    "POSTGRES_CREATE_SCHEMA": "true = create or upgrade the PostgreSQL schema on first use (else run migrate).",
    "POSTGRES_POOL_SIZE": "Most PostgreSQL connections per instance (default 5).",
    "SESSION_TTL_SECONDS": "Seconds an idle session is kept in Cosmos (Cosmos TTL); unset or -1 = forever.",
    "MAX_MESSAGE_BYTES": "Largest accepted user message, UTF-8 bytes (default 32768).",
    "MAX_SNAPSHOT_BYTES": "Largest snapshot document written, bytes (default 1572864; Cosmos caps items at 2 MB).",
    "SESSION_CACHE_MB": "MB of stored sessions an instance keeps restored for their next turn (default 32; 0 = off).",
    "COMPACTION_STRATEGY": "What bounds the live window: messages | tokens | none (default messages).",
    "COMPACTION_MAX_MESSAGES": "Most messages a prompt holds with COMPACTION_STRATEGY=messages (default 40).",
    "COMPACTION_TOKEN_BUDGET": "Most estimated tokens a prompt holds with COMPACTION_STRATEGY=tokens (default 8000).",
    "IDEMPOTENCY_KEYS": "How many recent Idempotency-Keys a session remembers (default 50).",
    "MODEL_PROVIDER": "azure_openai | openai | echo; unset = chosen from the model settings present.",
    "AZURE_OPENAI_ENDPOINT": "Azure OpenAI endpoint, e.g. https://<resource>.openai.azure.com/.",
    "AZURE_OPENAI_MODEL": "Azure OpenAI chat deployment name.",
    "AZURE_OPENAI_API_KEY": "Azure OpenAI key; unset = Microsoft Entra ID (managed identity).",
    "AZURE_OPENAI_API_VERSION": "Azure OpenAI API version (default: MAF's Chat Completions default).",
    "OPENAI_BASE_URL": "OpenAI-compatible endpoint (Ollama, vLLM, LM Studio); unset = api.openai.com.",
    "OPENAI_API_KEY": "Key of the OpenAI-compatible endpoint (optional for local servers).",
    "OPENAI_MODEL": "Model name at the OpenAI-compatible endpoint.",
    "MODEL_TIMEOUT_SECONDS": "Seconds a model request may take, or stay silent mid-stream (default 60).",
    "MODEL_MAX_RETRIES": "How often a failed model request is retried by the OpenAI SDK (default 2).",
    "MODEL_MAX_OUTPUT_TOKENS": "Most tokens one model call may write (max_completion_tokens); unset = the model's.",
    "SSE_KEEPALIVE_SECONDS": "Seconds of model silence before a stream sends an SSE keep-alive (default 15).",
    "CHAT_UI": "true = serve the chat page at /api/ui (default true).",
    "AGENT_NAME": "The agent's name (default assistant).",
    "AGENT_TOOLS": "The agent's tools: comma-separated module:attribute references (default none).",
    "AGENT_INSTRUCTIONS": "The agent's system instructions.",
    "AZURE_CLIENT_ID": "Client id of the user-assigned managed identity (Azure only).",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "Application Insights to export telemetry to (Entra ID auth).",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "OTLP/HTTP endpoint to export telemetry to, e.g. http://127.0.0.1:4318.",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "OTLP protocol; only http/protobuf (the default) is installed.",
    "OTEL_SERVICE_NAME": "The service name in telemetry (default stateful-agent).",
    "ENABLE_SENSITIVE_DATA": "true = MAF records message and tool contents in spans (default false).",
}

#: Settings never set in Azure: keys (Azure uses managed identity), local-only options and the
#: OpenAI-compatible endpoint. Every other setting is set by the infrastructure (infra/).
LOCAL_ONLY_SETTINGS = frozenset(
    {
        "MAF_SESSION_DIR",
        "EASYAUTH_LOCAL_HEADERS",
        "COSMOS_KEY",
        "COSMOS_CREATE_CONTAINER",
        "POSTGRES_CREATE_SCHEMA",
        "AZURE_OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_MODEL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    }
)

DEFAULT_INSTRUCTIONS = "You are a helpful assistant. Answer concisely."
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")


@dataclass(frozen=True)
class Settings:
    """Validated application settings."""

    auth_mode: str = "none"
    auth_user_header: str = "X-User-Id"
    easyauth_local_headers: bool = False
    #: Platform facts (set by App Service, not app settings): Easy Auth is on; the app runs in Azure.
    easyauth_enabled: bool = False
    in_azure: bool = False
    backend: str = "file"
    session_dir: Path = Path(".sessions")
    cosmos_endpoint: str | None = None
    cosmos_key: str | None = field(default=None, repr=False)
    cosmos_database: str = "agents"
    cosmos_container: str = "conversations"
    cosmos_create_container: bool = False
    #: May hold a password: kept out of ``repr`` (and never logged).
    postgres_dsn: str | None = field(default=None, repr=False)
    postgres_create_schema: bool = False
    postgres_pool_size: int = 5
    session_ttl_seconds: int | None = None
    max_message_bytes: int = 32 * 1024
    max_snapshot_bytes: int = 1_572_864
    session_cache_bytes: int = 32 * 1024 * 1024
    compaction_strategy: str = "messages"
    compaction_max_messages: int = 40
    compaction_token_budget: int = 8000
    idempotency_keys: int = 50
    model_provider: str = "echo"
    azure_openai_endpoint: str | None = None
    azure_openai_model: str | None = None
    azure_openai_api_key: str | None = None
    azure_openai_api_version: str | None = None
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    openai_model: str | None = None
    model_timeout_seconds: int = 60
    model_max_retries: int = 2
    model_max_output_tokens: int | None = None
    sse_keepalive_seconds: int = 15
    chat_ui: bool = True
    agent_name: str = "assistant"
    agent_tools: str = ""
    agent_instructions: str = DEFAULT_INSTRUCTIONS
    azure_client_id: str | None = None

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


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; raise ``ConfigurationError`` naming the bad one."""
    env = _Env(os.environ if environ is None else environ)
    backend = env.choice("MAF_SESSION_BACKEND", BACKENDS, default="file")
    cosmos_endpoint = env.text("COSMOS_ENDPOINT")
    if backend == "cosmos" and not cosmos_endpoint:
        raise ConfigurationError("COSMOS_ENDPOINT is required when MAF_SESSION_BACKEND=cosmos.")
    if cosmos_endpoint and not cosmos_endpoint.startswith(("https://", "http://")):
        raise ConfigurationError("COSMOS_ENDPOINT must be an http(s) URL.")
    postgres_dsn = env.text("POSTGRES_DSN")
    if backend == "postgres":
        _check_conninfo(postgres_dsn or "")
    ttl = env.integer("SESSION_TTL_SECONDS", default=None, minimum=-1)
    if ttl == 0:
        raise ConfigurationError("SESSION_TTL_SECONDS must be -1 (keep forever) or a positive number of seconds.")

    provider = env.choice("MODEL_PROVIDER", MODEL_PROVIDERS, default=None) or _infer_provider(env)
    if provider == "azure_openai":
        env.require("AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_MODEL", reason="MODEL_PROVIDER=azure_openai")
    elif provider == "openai":
        env.require("OPENAI_MODEL", reason="MODEL_PROVIDER=openai")
        if not env.text("OPENAI_BASE_URL") and not env.text("OPENAI_API_KEY"):
            raise ConfigurationError(
                "MODEL_PROVIDER=openai needs OPENAI_API_KEY, or OPENAI_BASE_URL for a local server."
            )

    user_header = env.text("AUTH_USER_HEADER") or "X-User-Id"
    if not _HEADER_NAME.fullmatch(user_header):
        raise ConfigurationError(f"AUTH_USER_HEADER={user_header!r} is not an HTTP header name.")
    return Settings(
        auth_mode=env.choice("AUTH_MODE", AUTH_MODES, default="none") or "none",
        auth_user_header=user_header,
        easyauth_local_headers=env.flag("EASYAUTH_LOCAL_HEADERS"),
        easyauth_enabled=(env.text("WEBSITE_AUTH_ENABLED") or "").lower() == "true",
        in_azure=bool(env.text("WEBSITE_INSTANCE_ID") or env.text("WEBSITE_SITE_NAME")),
        backend=backend,
        session_dir=Path(env.text("MAF_SESSION_DIR") or ".sessions"),
        cosmos_endpoint=cosmos_endpoint,
        cosmos_key=env.text("COSMOS_KEY"),
        cosmos_database=env.text("COSMOS_DATABASE") or "agents",
        cosmos_container=env.text("COSMOS_CONTAINER") or "conversations",
        cosmos_create_container=env.flag("COSMOS_CREATE_CONTAINER"),
        postgres_dsn=postgres_dsn,
        postgres_create_schema=env.flag("POSTGRES_CREATE_SCHEMA"),
        postgres_pool_size=env.integer("POSTGRES_POOL_SIZE", default=5, minimum=1, maximum=100),
        session_ttl_seconds=None if ttl in (None, -1) else ttl,
        max_message_bytes=env.integer("MAX_MESSAGE_BYTES", default=32 * 1024, minimum=1),
        max_snapshot_bytes=env.integer("MAX_SNAPSHOT_BYTES", default=1_572_864, minimum=1024, maximum=2 * 1024 * 1024),
        session_cache_bytes=env.integer("SESSION_CACHE_MB", default=32, minimum=0, maximum=4096) * 1024 * 1024,
        compaction_strategy=env.choice("COMPACTION_STRATEGY", COMPACTION_STRATEGIES, default="messages"),
        compaction_max_messages=env.integer("COMPACTION_MAX_MESSAGES", default=40, minimum=2),
        compaction_token_budget=env.integer("COMPACTION_TOKEN_BUDGET", default=8000, minimum=100),
        idempotency_keys=env.integer("IDEMPOTENCY_KEYS", default=50, minimum=1, maximum=1000),
        model_provider=provider,
        azure_openai_endpoint=env.text("AZURE_OPENAI_ENDPOINT"),
        azure_openai_model=env.text("AZURE_OPENAI_MODEL"),
        azure_openai_api_key=env.text("AZURE_OPENAI_API_KEY"),
        azure_openai_api_version=env.text("AZURE_OPENAI_API_VERSION"),
        openai_base_url=env.text("OPENAI_BASE_URL"),
        openai_api_key=env.text("OPENAI_API_KEY"),
        openai_model=env.text("OPENAI_MODEL"),
        model_timeout_seconds=env.integer("MODEL_TIMEOUT_SECONDS", default=60, minimum=1, maximum=600),
        model_max_retries=env.integer("MODEL_MAX_RETRIES", default=2, minimum=0, maximum=10),
        model_max_output_tokens=env.integer("MODEL_MAX_OUTPUT_TOKENS", default=None, minimum=1, maximum=1_000_000),
        sse_keepalive_seconds=env.integer("SSE_KEEPALIVE_SECONDS", default=15, minimum=1, maximum=230),
        chat_ui=env.flag("CHAT_UI", default=True),
        agent_name=env.text("AGENT_NAME") or "assistant",
        agent_tools=env.text("AGENT_TOOLS") or "",
        agent_instructions=env.text("AGENT_INSTRUCTIONS") or DEFAULT_INSTRUCTIONS,
        azure_client_id=env.text("AZURE_CLIENT_ID"),
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
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
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

    def integer(self, name: str, *, default: int | None, minimum: int, maximum: int | None = None) -> int | None:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"{name}={raw!r} is not an integer.") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise ConfigurationError(f"{name}={value} must be {bounds}.")
        return value
