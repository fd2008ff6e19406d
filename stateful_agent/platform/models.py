"""Chat clients: MAF's Chat Completions client for Azure OpenAI or any OpenAI-compatible
endpoint, or ``echo``, a deterministic offline model for local runs without a model.

The Chat Completions API keeps no history on the service side, so every turn's
context comes from our stored session. (MAF's Responses client, ``OpenAIChatClient``,
stores history server-side by default and would bypass the store.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from agent_framework import (
    BaseChatClient,
    ChatContext,
    ChatMiddleware,
    ChatMiddlewareLayer,
    ChatResponse,
    ChatResponseUpdate,
    Content,
    FunctionInvocationLayer,
    Message,
    ResponseStream,
)
from agent_framework.observability import ChatTelemetryLayer

from ..errors import AgentServiceError, ContentFilteredError, ModelError
from .settings import Settings

logger = logging.getLogger(__name__)


class IncompleteReplyError(Exception):
    """The model's reply ended without a finish reason (the stream closed mid-answer)."""


class FinishedReplies(ChatMiddleware):
    """Every model call of a turn must say it finished: a turn is complete only if each of its model calls is.

    A stream that closes without a finish reason (no chunk at all, or a reply cut off after a tool ran) is
    an incomplete reply, even when an earlier call of the same turn finished with ``tool_calls``; a call
    stopped by the content filter does not count either. Checked per call, streamed or not, as MAF
    finalizes the call's response, so the turn fails before anything is stored.
    """

    async def process(self, context: ChatContext, call_next: Callable[[], Awaitable[None]]) -> None:
        await call_next()
        if isinstance(context.result, ResponseStream):
            context.result.with_result_transform(check_finished)
        elif context.result is not None:
            check_finished(context.result)


def check_finished(response: ChatResponse) -> None:
    """Accept a model response only when the model said it finished, and not because of its content filter.

    Raises:
        IncompleteReplyError: No finish reason (the model's stream closed mid-answer).
        ContentFilteredError: The model stopped because its content filter struck.
    """
    if response.finish_reason is None:
        raise IncompleteReplyError("the model's reply ended without a finish reason")
    if response.finish_reason == "content_filter":
        raise ContentFilteredError(
            "The model's content filter stopped its reply; the session was not changed. Rephrase the message."
        )


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
    """The answer to a failed model call, with what the log needs (the endpoint, the status, the cause) in
    ``internal``, and ``unexpected`` set only for a failure nobody anticipated (its traceback is logged)."""
    from agent_framework.exceptions import (
        AgentContentFilterException,
        AgentInvalidAuthException,
        ChatClientContentFilterException,
        ChatClientInvalidAuthException,
    )
    from azure.core.exceptions import ClientAuthenticationError

    endpoint = settings.model_endpoint
    if isinstance(exc, AgentServiceError):  # already decided (a content-filtered finish, say)
        exc.internal = exc.internal or f"model at {endpoint}: {exc.code}"
        return exc
    retry = "The model call failed; the session was not changed. Retry the turn."
    chain = _causes(exc)
    if any(isinstance(e, ChatClientContentFilterException | AgentContentFilterException) for e in chain):
        return ContentFilteredError(
            "The model's content filter refused this message or its reply; the session was not changed. "
            "Rephrase the message; retrying it unchanged will be refused again.",
            internal=f"model at {endpoint}: content filter",
        )
    if any(isinstance(e, IncompleteReplyError) for e in chain):
        return ModelError(
            "The model's reply broke off before it finished; the session was not changed. Retry the turn.",
            internal=f"model at {endpoint}: the reply ended without a finish reason",
        )
    status = next(
        (getattr(e, "status_code", None) for e in chain if isinstance(getattr(e, "status_code", None), int)), None
    )
    auth = (ChatClientInvalidAuthException, AgentInvalidAuthException, ClientAuthenticationError)
    if status in (401, 403) or any(isinstance(e, auth) for e in chain):
        return ModelError(
            retry,
            internal=f"Authentication to the model failed (endpoint {endpoint}, status {status}): {_last(chain)}. "
            "Check the key, or the identity's 'Cognitive Services OpenAI User' role.",
        )
    kind = _openai_failure(chain)
    if kind is not None or status is not None:
        return ModelError(retry, internal=f"model at {endpoint} (status {status}): {kind or _last(chain)}")
    return ModelError(retry, internal=f"model at {endpoint}: unexpected {_last(chain)}", unexpected=exc)


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


class EchoChatClient(
    FunctionInvocationLayer[Any], ChatMiddlewareLayer[Any], ChatTelemetryLayer[Any], BaseChatClient[Any]
):
    """An offline model: it answers from the conversation it is sent, deterministically.

    The reply states how many earlier messages it sees and quotes the first user message, so a
    conversation that survives a restart is visible at a glance. A message ``call <tool> {json}``
    makes it call that tool (when the agent has it) with those arguments; after the tool ran, it
    reports the result. It reports usage as an estimate of 4 characters a token.
    """

    OTEL_PROVIDER_NAME = "echo"

    def _inner_get_response(
        self, *, messages: Sequence[Message], stream: bool, options: Mapping[str, Any], **kwargs: Any
    ) -> Any:
        tools = {str(getattr(tool, "name", "")) for tool in options.get("tools") or ()}
        contents, finish = self.respond(messages, tools)
        usage = self.estimate_usage(messages, contents)
        if stream:

            async def _chunks() -> AsyncIterator[ChatResponseUpdate]:
                pieces = _split_text(contents)
                for index, piece in enumerate(pieces):
                    last = index == len(pieces) - 1
                    extra = [Content.from_usage(usage)] if last else []
                    yield ChatResponseUpdate(
                        role="assistant", contents=[piece, *extra], finish_reason=finish if last else None
                    )

            return self._build_response_stream(_chunks())

        async def _respond() -> ChatResponse:
            return ChatResponse(
                messages=[Message(role="assistant", contents=contents)],
                model="echo",
                finish_reason=finish,
                usage_details=usage,
            )

        return _respond()

    @classmethod
    def respond(cls, messages: Sequence[Message], tools: set[str]) -> tuple[list[Content], str]:
        """The reply's contents and finish reason for a conversation, given the tools on offer."""
        last = messages[-1] if messages else None
        results = [c for c in (last.contents if last else ()) if c.type == "function_result"]
        if last is not None and last.role == "tool" and results:
            names = {c.call_id: c.name for m in messages for c in m.contents if c.type == "function_call"}
            text = "; ".join(f"{names.get(r.call_id, 'the tool')} returned: {r.result}" for r in results)
            return [Content.from_text(f"[echo, offline] {text}")], "stop"
        call = _CALL.fullmatch(last.text.strip()) if last is not None and last.role == "user" else None
        if call and call.group(1) in tools:
            try:
                arguments = json.loads(call.group(2) or "{}")
            except (ValueError, RecursionError):
                arguments = None
            if isinstance(arguments, dict):
                call_id = "echo-" + hashlib.sha256(last.text.encode("utf-8", "replace")).hexdigest()[:12]
                return [
                    Content.from_function_call(call_id=call_id, name=call.group(1), arguments=arguments)
                ], "tool_calls"
        return [Content.from_text(cls.reply_to(messages))], "stop"

    @staticmethod
    def estimate_usage(messages: Sequence[Message], contents: Sequence[Content]) -> dict[str, int]:
        """Tokens as MAF's 4-characters-a-token estimate counts them."""
        sent = sum(len(m.text) for m in messages) + 16 * len(messages)
        written = sum(
            len(c.text or "") + len(json.dumps(c.arguments or {})) * (c.type == "function_call") for c in contents
        )
        inputs, outputs = max(1, sent // 4), max(1, written // 4)
        return {"input_token_count": inputs, "output_token_count": outputs, "total_token_count": inputs + outputs}

    @staticmethod
    def reply_to(messages: Sequence[Message]) -> str:
        """The deterministic reply to a conversation."""
        conversation = [m for m in messages if m.role in ("user", "assistant") and m.text]
        users = [m.text for m in conversation if m.role == "user"]
        last = users[-1] if users else ""
        earlier = len(conversation) - 1 if conversation else 0
        reply = f'[echo, offline] You said: "{last}". I see {earlier} earlier message(s).'
        if len(users) > 1:
            reply += f' Your first message was: "{users[0]}".'
        return reply


_CALL = re.compile(r"call\s+([A-Za-z_]\w*)\s*(\{.*\})?", re.DOTALL)


def _split_text(contents: list[Content]) -> list[Content]:
    """Stream a text reply word by word, anything else as it is."""
    if len(contents) == 1 and contents[0].type == "text":
        words = (contents[0].text or "").split(" ")
        return [Content.from_text(word if i == 0 else f" {word}") for i, word in enumerate(words)]
    return contents
