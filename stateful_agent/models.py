"""Chat clients: MAF's Chat Completions client for Azure OpenAI or any OpenAI-compatible
endpoint, or ``echo``, a deterministic offline model for local runs without a model.

The Chat Completions API keeps no history on the service side, so every turn's
context comes from our stored session. (MAF's Responses client, ``OpenAIChatClient``,
stores history server-side by default and would bypass the store.)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
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

from .settings import Settings

logger = logging.getLogger(__name__)


def build_chat_client(settings: Settings) -> BaseChatClient:
    """The chat client for ``settings.model_provider`` (constructing it makes no network call)."""
    if settings.model_provider == "echo":
        logger.warning(
            "No model is configured: using the offline 'echo' model. Set AZURE_OPENAI_ENDPOINT and "
            "AZURE_OPENAI_MODEL, or OPENAI_MODEL (with OPENAI_BASE_URL/OPENAI_API_KEY), to use a real model."
        )
        return EchoChatClient()

    from agent_framework.openai import OpenAIChatCompletionClient

    if settings.model_provider == "azure_openai":
        auth: dict[str, Any]
        if settings.azure_openai_api_key:
            auth = {"api_key": settings.azure_openai_api_key}
        else:
            from azure.identity.aio import DefaultAzureCredential

            auth = {"credential": DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)}
        return OpenAIChatCompletionClient(
            model=settings.azure_openai_model,
            azure_endpoint=settings.azure_openai_endpoint,
            api_version=settings.azure_openai_api_version,
            **auth,
        )
    # Local OpenAI-compatible servers (Ollama, vLLM, LM Studio) accept any key.
    return OpenAIChatCompletionClient(
        model=settings.openai_model,
        base_url=settings.openai_base_url,
        api_key=settings.openai_api_key or "unused-by-local-server",
    )


class EchoChatClient(FunctionInvocationLayer[Any], ChatMiddlewareLayer[Any], BaseChatClient[Any]):
    """An offline model: it answers from the conversation it is sent, deterministically.

    The reply states how many earlier messages it sees and quotes the first user
    message, so a conversation that survives a restart is visible at a glance.
    """

    OTEL_PROVIDER_NAME = "echo"

    def _inner_get_response(
        self, *, messages: Sequence[Message], stream: bool, options: Mapping[str, Any], **kwargs: Any
    ) -> Any:
        reply = self.reply_to(messages)
        if stream:

            async def _chunks() -> AsyncIterator[ChatResponseUpdate]:
                for index, word in enumerate(reply.split(" ")):
                    yield ChatResponseUpdate(
                        role="assistant", contents=[Content.from_text(word if index == 0 else f" {word}")]
                    )

            return self._build_response_stream(_chunks())

        async def _respond() -> ChatResponse:
            return ChatResponse(messages=[Message(role="assistant", contents=[reply])], model="echo")

        return _respond()

    @staticmethod
    def reply_to(messages: Sequence[Message]) -> str:
        """The deterministic reply to a conversation."""
        conversation = [m for m in messages if m.role in ("user", "assistant")]
        users = [m.text for m in conversation if m.role == "user"]
        last = users[-1] if users else ""
        earlier = len(conversation) - 1 if conversation else 0
        reply = f'[echo, offline] You said: "{last}". I see {earlier} earlier message(s).'
        if len(users) > 1:
            reply += f' Your first message was: "{users[0]}".'
        return reply
