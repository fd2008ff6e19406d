"""The process-wide ``TurnService``: built on first use, reused by every invocation.

Function instances are reused across invocations, so the store's network client
and the agent are created once per worker process, never per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .platform.settings import Settings, load_settings

if TYPE_CHECKING:
    from agent_framework import BaseChatClient

    from .turns.service import TurnService

_service: TurnService | None = None


def build_service(settings: Settings, *, chat_client: BaseChatClient | None = None) -> TurnService:
    """Wire settings, store and agent together (no I/O happens here)."""
    from .platform.agent import build_agent
    from .stores import create_store
    from .turns.service import TurnService

    tool_servers = None
    if settings.mcp_servers:
        from .platform.mcp import ToolServers
        from .platform.obo import OnBehalfOf

        exchange = None
        if settings.auth_client_id and settings.auth_tenant_id:
            exchange = OnBehalfOf(
                settings.auth_tenant_id,
                settings.auth_client_id,
                client_secret=settings.auth_client_secret,
                identity_client_id=settings.azure_client_id,
            )
        tool_servers = ToolServers(settings.mcp_servers, client_id=settings.azure_client_id, exchange=exchange)
    return TurnService(settings, create_store(settings), lambda: build_agent(settings, chat_client), tool_servers)


def get_service() -> TurnService:
    """The process's service, built from the environment on first use (with OpenTelemetry, when configured).

    Raises:
        ConfigurationError: A setting is missing or invalid.
    """
    global _service
    if _service is None:
        from .platform import telemetry

        settings = load_settings()
        telemetry.configure()
        _service = build_service(settings)
    return _service


async def install(service: TurnService | None) -> None:
    """Replace the process's service (tests, local hosts); closes the previous one."""
    global _service
    previous, _service = _service, service
    if previous is not None and previous is not service:
        await previous.close()
