"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with the statuses the official
client maps to its exception classes and the same stable ``code`` as the rest of the API.

The client retries 408, 409, 429 and 5xx unless the server says otherwise: an error a retry cannot fix carries
``x-should-retry: false``; a retryable one (``503`` with ``Retry-After``, ``502 model_error``, after which
nothing was stored) does not.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Response

from ...errors import AgentServiceError
from ..problems import StrictJSONResponse

logger = logging.getLogger(__name__)

_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}
_RETRYABLE = {429, 502, 503}
_FALLBACK = (
    b'{"error":{"message":"An unexpected error occurred; it was logged.","type":"server_error","param":null,'
    b'"code":"internal_error"}}'
)


def error_body(error: AgentServiceError) -> dict[str, Any]:
    """OpenAI's error object for ``error``."""
    kind = _TYPES.get(error.status) or ("server_error" if error.status >= 500 else "invalid_request_error")
    param = error.extra.get("param")
    return {"error": {"message": error.detail, "type": kind, "param": param, "code": error.code}}


def error_response(error: AgentServiceError, instance: str | None = None) -> Response:
    """The JSON error response for ``error``; rendering it never fails."""
    headers = dict(error.headers)
    if error.status not in _RETRYABLE:
        headers["x-should-retry"] = "false"
    try:
        return StrictJSONResponse(error_body(error), status_code=error.status, headers=headers)
    except Exception:
        logger.exception("Could not render the error object of %s", type(error).__name__)
        return Response(_FALLBACK, status_code=500, media_type="application/json", headers={"x-should-retry": "false"})
