"""Counts what reaches Cosmos DB: requests, bytes each way, request charge (azure-core response hook), and
an estimate of what Azure Cosmos DB would charge, because the local server charges a flat 1 per request.
For PostgreSQL it counts statements (each one round trip).

The estimate is anchored on Microsoft's published point-read costs (a 1 KB item costs 1 RU, a 100 KB item
about 10 RU), interpolated linearly in the item's size. A write (create, replace, upsert, delete) is taken as
five times a read of the same size (the guidance's ratio at 1 KB with default indexing; our container indexes
four paths, so our writes would cost somewhat less). A query costs 2.5 RU plus a read of the bytes it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Usage:
    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    request_charge: float = 0.0
    estimated_ru: float = 0.0


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
        sent = len(body.encode() if isinstance(body, str) else body)
        received = int(http_response.headers.get("Content-Length") or 0)
        self.usage.bytes_sent += sent
        self.usage.bytes_received += received
        self.usage.request_charge += float(http_response.headers.get("x-ms-request-charge") or 0)
        self.usage.estimated_ru += estimate_ru(request, sent, received)

    def statement(self) -> None:
        """Count one SQL statement (one round trip to PostgreSQL)."""
        if not self.paused:
            self.usage.requests += 1

    def adjust_requests(self, delta: int) -> None:
        """Correct the count when one logical request was sent as several (emulated batches)."""
        if not self.paused:
            self.usage.requests += delta

    def take(self) -> Usage:
        """The usage since the last ``take``."""
        usage, self.usage = self.usage, Usage()
        return usage


def estimate_ru(request: Any, sent: int, received: int) -> float:
    """Azure Cosmos DB request units for one request, by the model in this module's docstring."""
    if str(request.headers.get("x-ms-documentdb-isquery", "")).lower() == "true":
        return round(2.5 + read_ru(received), 2)
    if request.method == "GET":
        return round(read_ru(received), 2)
    if "/docs" in request.url:
        return round(5 * read_ru(sent), 2)
    return 1.0  # metadata (database, container)


def read_ru(size: int) -> float:
    """A point read of ``size`` bytes: 1 RU at 1 KB (or less), 10 RU at 100 KB, linear in between and beyond."""
    kilobytes = max(size / 1024, 1.0)
    return 1 + (kilobytes - 1) * 9 / 99
