"""The agent: MAF ``Agent`` with its history kept in the session state we store."""

from __future__ import annotations

from agent_framework import Agent, BaseChatClient, InMemoryHistoryProvider

from .models import build_chat_client
from .settings import Settings


def build_agent(settings: Settings, client: BaseChatClient | None = None) -> Agent:
    """Build the agent once per process.

    The history provider is explicit: it writes every turn into ``session.state``,
    which is what we persist. Without it the turns would silently be lost.
    """
    return Agent(
        client=client or build_chat_client(settings),
        name=settings.agent_name,
        instructions=settings.agent_instructions,
        context_providers=[InMemoryHistoryProvider()],
    )
