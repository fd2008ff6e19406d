"""JSON-RPC 2.0 errors, for the doors that speak it (A2A, MCP): the specification's codes, and an app error
as a JSON-RPC error whose ``data`` keeps the app's stable ``code`` and HTTP status."""

from __future__ import annotations

from typing import Any

from fastapi import Response

from ..errors import AgentServiceError, printable
from .problems import StrictJSONResponse

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL = -32700, -32600, -32601, -32602, -32603


class RpcError(Exception):
    """A JSON-RPC error: ``code``, ``message`` and, for errors of the app, its stable ``code`` in ``data``;
    ``status`` is its HTTP status (``200`` unless the HTTP request itself was refused)."""

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None, status: int = 200) -> None:
        super().__init__(message)
        self.code, self.message, self.data, self.status = code, printable(message), data, status

    def body(self, request_id: Any) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data:
            error["data"] = self.data
        return {"jsonrpc": "2.0", "id": request_id, "error": error}

    @classmethod
    def of(cls, error: AgentServiceError, *, not_found: int = INVALID_PARAMS) -> RpcError:
        """The JSON-RPC error of an app error: the caller's mistakes are invalid params (a missing one
        ``not_found``), the rest internal errors; ``data`` keeps the app's code and status."""
        if error.status >= 500:
            code = INTERNAL
        elif error.status == 404:
            code = not_found
        else:
            code = INVALID_PARAMS
        return cls(code, error.detail, {"code": error.code, "status": error.status})


def refused(error: AgentServiceError, instance: str = "") -> Response:
    """An error before a JSON-RPC request is read (unauthenticated, too large, not ready): its HTTP status and
    headers, and a JSON-RPC error body (invalid request, or internal for a ``5xx``)."""
    rpc = RpcError.of(error)
    if rpc.code == INVALID_PARAMS:
        rpc.code = INVALID_REQUEST
    return StrictJSONResponse(rpc.body(None), status_code=error.status, headers=error.headers)
