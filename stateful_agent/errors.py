"""The errors the app reports, each with its HTTP status and stable problem ``code``.

Raised anywhere (validation, stores, pipeline); turned into RFC 9457
``application/problem+json`` responses in one place, ``http.problems.problem_response``.
"""

from __future__ import annotations

MAX_DETAIL_CHARS = 500


class AgentServiceError(Exception):
    """Base class: an error a client may see. ``detail`` must never hold secrets.

    ``detail`` is made safe to render whatever it was built from: at most
    ``MAX_DETAIL_CHARS`` characters, and no lone surrogates (UTF-8 cannot carry them).
    """

    status: int = 500
    code: str = "internal_error"
    title: str = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict | None = None,
        internal: str | None = None,
        unexpected: BaseException | None = None,
    ) -> None:
        self.detail = printable(detail or self.title)
        super().__init__(self.detail)
        self.headers = headers or {}
        self.extra = extra or {}  # further members of the problem document (RFC 9457 extensions)
        #: For the log only, never the client: what went wrong (endpoint, status, the underlying error).
        self.internal = internal
        #: An unexpected exception behind it, whose traceback the log shows (expected failures get one line).
        self.unexpected = unexpected


def printable(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """``text`` shortened to ``limit`` characters, with lone surrogates replaced by ``?``."""
    text = str(text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.encode("utf-8", "replace").decode("utf-8")


class InvalidJsonError(AgentServiceError):
    status, code, title = 400, "invalid_json", "Request body is not valid JSON"


class InvalidRequestError(AgentServiceError):
    status, code, title = 400, "invalid_request", "Invalid request"


class InvalidSessionIdError(AgentServiceError):
    status, code, title = 400, "invalid_session_id", "Invalid session id"


class InvalidIdempotencyKeyError(AgentServiceError):
    status, code, title = 400, "invalid_idempotency_key", "Invalid Idempotency-Key"


class InvalidCursorError(AgentServiceError):
    status, code, title = 400, "invalid_cursor", "Invalid cursor"


class RouteNotFoundError(AgentServiceError):
    status, code, title = 404, "route_not_found", "Not Found"


class MethodNotAllowedError(AgentServiceError):
    status, code, title = 405, "method_not_allowed", "Method Not Allowed"


class ChatPageDisabledError(AgentServiceError):
    status, code, title = 404, "chat_ui_disabled", "The chat page is turned off"


class UnauthenticatedError(AgentServiceError):
    status, code, title = 401, "unauthenticated", "Sign-in required"


class SessionNotFoundError(AgentServiceError):
    status, code, title = 404, "session_not_found", "Session not found"


class SessionConflictError(AgentServiceError):
    status, code, title = 409, "session_conflict", "Session was changed by another request"


class StaleTurnError(AgentServiceError):
    """A request continues a session from a turn that is no longer its latest (a chain cannot branch)."""

    status, code, title = 409, "conversation_moved_on", "The conversation has moved on"


class ApprovalsPendingError(AgentServiceError):
    """The session waits for answers to tool approvals; ``extra["pending_approvals"]`` lists them."""

    status, code, title = 409, "approvals_pending", "Tool calls are waiting for approval"


class ApprovalNotPendingError(AgentServiceError):
    status, code, title = 409, "approval_not_pending", "No such tool call is waiting for approval"


class MessageTooLargeError(AgentServiceError):
    status, code, title = 413, "message_too_large", "Message too large"


class SessionTooLargeError(AgentServiceError):
    status, code, title = 413, "session_too_large", "Session too large to store"


class UnsupportedMediaTypeError(AgentServiceError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class IdempotencyKeyReusedError(AgentServiceError):
    status, code, title = 422, "idempotency_key_reused", "Idempotency-Key reused with a different request"


class ContentFilteredError(AgentServiceError):
    status, code, title = 422, "content_filtered", "The model's content filter refused the turn"


class SessionCorruptError(AgentServiceError, ValueError):
    """Also a ``ValueError``, as MAF's own stores report a snapshot they cannot restore."""

    status, code, title = 500, "session_corrupt", "Stored session cannot be restored"


class ConfigurationError(AgentServiceError):
    status, code, title = 500, "configuration_error", "The app is misconfigured"


class NotReadyError(ConfigurationError):
    """What ``/api/health`` reports for a store it cannot use as configured: 503, so probes take the
    instance out, with the ``configuration_error`` code and detail every session route reports (500)."""

    status, title = 503, "The app cannot serve sessions as configured"


class ModelError(AgentServiceError):
    status, code, title = 502, "model_error", "The model call failed"


class StoreUnavailableError(AgentServiceError):
    status, code, title = 503, "store_unavailable", "Session store unavailable"

    def __init__(self, detail: str | None = None, *, retry_after_seconds: int = 2, internal: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after_seconds))}, internal=internal)


class ToolServerUnavailableError(AgentServiceError):
    """A tool server the turn needs (``required``, or holding an approved call) cannot be reached: nothing was
    stored, and the same request may be sent again."""

    status, code, title = 503, "tool_server_unavailable", "A tool server is unavailable"

    def __init__(self, detail: str | None = None, *, retry_after_seconds: int = 5, internal: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after_seconds))}, internal=internal)


class UnsupportedParameterError(AgentServiceError):
    """A request field this app does not take (or takes only with other values); ``param`` names it."""

    status, code, title = 400, "unsupported_parameter", "Unsupported parameter"

    def __init__(self, detail: str, *, param: str) -> None:
        super().__init__(detail, extra={"param": param})


class ResponseNotFoundError(AgentServiceError):
    status, code, title = 404, "response_not_found", "Response not found"


class ItemNotFoundError(AgentServiceError):
    status, code, title = 404, "item_not_found", "Conversation item not found"
