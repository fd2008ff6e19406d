"""Shared helpers of the custom checks (not a check itself: it registers nothing)."""

from __future__ import annotations

from typing import Any


def config_of(conf: dict[str, Any]) -> dict[str, Any]:
    """The resource body, also for a conditional resource (``= if (...) {...}``)."""
    return conf["config"] if "condition" in conf and isinstance(conf.get("config"), dict) else conf


def path(conf: dict[str, Any], *keys: str) -> Any:
    """The value at ``keys`` in nested dicts, or ``None``."""
    value: Any = config_of(conf)
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value
