"""The agent: MAF ``Agent`` with its history kept in the session state we store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent_framework import Agent, BaseChatClient, InMemoryHistoryProvider, Message

from .models import FinishedReplies, build_chat_client
from .settings import Settings
from .tools import load_tools


class TurnHistoryProvider(InMemoryHistoryProvider):
    """MAF's in-memory history provider, appending every turn as it happened.

    MAF's provider drops incoming messages that repeat the stored ones, for callers
    that re-send the whole transcript. This app sends only the new message, so a
    repeat is real ("yes" answered "ok" twice) and must be kept: dropping it would
    lose the turn. Appending also saves hashing the whole history on every turn.
    """

    async def save_messages(
        self, session_id: str | None, messages: Sequence[Message], *, state: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if state is not None and messages:
            state["messages"] = [*state.get("messages", []), *messages]


def build_agent(settings: Settings, client: BaseChatClient | None = None) -> Agent:
    """Build the agent once per process.

    The history provider is explicit: it writes every turn into ``session.state``,
    which is what we persist. Without it the turns would silently be lost. Every model call
    must finish (``FinishedReplies``), and ``MODEL_MAX_OUTPUT_TOKENS`` caps what each may write.

    Raises:
        ConfigurationError: ``AGENT_TOOLS`` names something that cannot be loaded as a tool.
    """
    options: dict[str, Any] = {}
    if settings.model_max_output_tokens is not None:
        options["max_tokens"] = settings.model_max_output_tokens  # Chat Completions: max_completion_tokens
    return Agent(
        client=client or build_chat_client(settings),
        name=settings.agent_name,
        instructions=settings.agent_instructions,
        tools=load_tools(settings.agent_tools) or None,
        context_providers=[TurnHistoryProvider()],
        middleware=[FinishedReplies()],
        default_options=options or None,  # type: ignore[arg-type]
    )
