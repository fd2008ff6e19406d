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

from .errors import AgentServiceError, ContentFilteredError, ModelError
from .settings import Settings

logger = logging.getLogger(__name__)


class IncompleteReplyError(Exception):
    """The model's reply ended without a finish reason (the stream closed mid-answer)."""


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
        client = OpenAIChatCompletionClient(
            model=settings.azure_openai_model,
            azure_endpoint=settings.azure_openai_endpoint,
            api_version=settings.azure_openai_api_version,
            **auth,
        )
    else:  # Local OpenAI-compatible servers (Ollama, vLLM, LM Studio) accept any key.
        client = OpenAIChatCompletionClient(
            model=settings.openai_model,
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key or "unused-by-local-server",
        )
    # The OpenAI SDK waits 600 s per attempt by default, longer than a function may run.
    client.client = client.client.with_options(
        timeout=settings.model_timeout_seconds, max_retries=settings.model_max_retries
    )
    return client


def model_failure(exc: BaseException, settings: Settings, session_id: str) -> AgentServiceError:
    """The answer to a failed model call, logged once: one line for an expected failure (with the
    endpoint and status), the traceback only for an unexpected one."""
    from agent_framework.exceptions import (
        AgentContentFilterException,
        AgentInvalidAuthException,
        ChatClientContentFilterException,
        ChatClientInvalidAuthException,
    )
    from azure.core.exceptions import ClientAuthenticationError

    if isinstance(exc, AgentServiceError):  # already decided (a content-filtered finish, say)
        logger.warning(
            "Model turn of session %r refused: %s (endpoint %s)", session_id, exc.code, settings.model_endpoint
        )
        return exc
    endpoint = settings.model_endpoint
    retry = ModelError("The model call failed; the session was not changed. Retry the turn.")
    chain = _causes(exc)
    if any(isinstance(e, ChatClientContentFilterException | AgentContentFilterException) for e in chain):
        logger.warning("Model content filter refused the turn of session %r (endpoint %s)", session_id, endpoint)
        return ContentFilteredError(
            "The model's content filter refused this message or its reply; the session was not changed. "
            "Rephrase the message; retrying it unchanged will be refused again."
        )
    if any(isinstance(e, IncompleteReplyError) for e in chain):
        logger.error("Model reply for session %r ended without a finish reason (endpoint %s)", session_id, endpoint)
        return ModelError(
            "The model's reply broke off before it finished; the session was not changed. Retry the turn."
        )
    status = next(
        (getattr(e, "status_code", None) for e in chain if isinstance(getattr(e, "status_code", None), int)), None
    )
    auth = (ChatClientInvalidAuthException, AgentInvalidAuthException, ClientAuthenticationError)
    if status in (401, 403) or any(isinstance(e, auth) for e in chain):
        logger.error(
            "Authentication to the model failed for session %r (endpoint %s, status %s): %s. Check the key, or the "
            "identity's 'Cognitive Services OpenAI User' role.",
            session_id,
            endpoint,
            status,
            _last(chain),
        )
        return retry
    kind = _openai_failure(chain)
    if kind is not None or status is not None:
        logger.error(
            "Model call failed for session %r (endpoint %s, status %s): %s",
            session_id,
            endpoint,
            status,
            kind or _last(chain),
        )
        return retry
    logger.error("Model call failed unexpectedly for session %r (endpoint %s)", session_id, endpoint, exc_info=exc)
    return retry


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it (``__cause__``, ``__context__``, MAF's ``inner_exception``), nearest first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 20:
        chain.append(current)
        inner = getattr(current, "inner_exception", None)
        current = inner if isinstance(inner, BaseException) else current.__cause__ or current.__context__
    return chain


def _last(chain: list[BaseException]) -> str:
    return f"{type(chain[-1]).__name__}: {chain[-1]}"


def _openai_failure(chain: list[BaseException]) -> str | None:
    """A one-line description of an expected OpenAI SDK failure (timeout, connection, status), if any."""
    import openai

    for error in chain:
        if isinstance(error, openai.APITimeoutError):
            return "the model did not answer in time (MODEL_TIMEOUT_SECONDS)"
        if isinstance(error, openai.APIConnectionError):
            return f"the model endpoint could not be reached: {error}"
        if isinstance(error, openai.APIStatusError):
            return f"{type(error).__name__}: {error.message}"
    return None


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
                words = reply.split(" ")
                for index, word in enumerate(words):
                    yield ChatResponseUpdate(
                        role="assistant",
                        contents=[Content.from_text(word if index == 0 else f" {word}")],
                        finish_reason="stop" if index == len(words) - 1 else None,
                    )

            return self._build_response_stream(_chunks())

        async def _respond() -> ChatResponse:
            return ChatResponse(
                messages=[Message(role="assistant", contents=[reply])], model="echo", finish_reason="stop"
            )

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
