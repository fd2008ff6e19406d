"""Counts what reaches Cosmos DB: requests, bytes each way, request charge (azure-core response hook)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Usage:
    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    request_charge: float = 0.0


class Meter:
    """Pass ``meter.hook`` as ``raw_response_hook`` to a ``CosmosClient``; read ``usage`` between marks."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.paused = False

    def hook(self, response: Any) -> None:
        if self.paused:
            return
        request, http_response = response.http_request, response.http_response
        body = request.body if request.body is not None else b""
        self.usage.requests += 1
        self.usage.bytes_sent += len(body.encode() if isinstance(body, str) else body)
        self.usage.bytes_received += int(http_response.headers.get("Content-Length") or 0)
        self.usage.request_charge += float(http_response.headers.get("x-ms-request-charge") or 0)

    def adjust_requests(self, delta: int) -> None:
        """Correct the count when one logical request was sent as several (emulated batches)."""
        if not self.paused:
            self.usage.requests += delta

    def take(self) -> Usage:
        """The usage since the last ``take``."""
        usage, self.usage = self.usage, Usage()
        return usage
