"""The write side: one turn of one session. ``TurnService.turn`` is the orchestrator every front door calls.

``TurnService``, ``TurnResult`` and ``completed`` load with ``service`` on first use, so importing a light
module of this package (``idempotency``, as the HTTP layer does while the app is indexed) loads no agent SDK.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PreparedTurn", "TurnResult", "TurnService", "completed"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
