"""Strict JSON encoding shared by the HTTP responses and the stores (no agent or cloud SDK imports)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def encode_json(value: Any, *, compact: bool = True) -> bytes:
    """Strict JSON as UTF-8: finite numbers and JSON types only; never fails on lone surrogates.

    A lone surrogate (which UTF-8 cannot carry) is written as its ``\\uXXXX`` escape, which
    reads back as the same string. ``compact=False`` puts a space after ``:`` and ``,``.

    Raises:
        TypeError: ``value`` holds something JSON cannot represent; the message names its path.
        ValueError: ``value`` holds a non-finite float; the message names its path.
    """
    try:
        separators = (",", ":") if compact else (", ", ": ")
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=separators)
    except (TypeError, ValueError):
        check_json_value(value, "")  # raises the same kind of error, naming the offending path
        raise
    return text.encode("utf-8", "backslashreplace")


def check_json_value(value: Any, path: str) -> None:
    """Raise ``TypeError``/``ValueError`` naming the first value below ``path`` that is not strict JSON."""
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"Session state value at {path or '<root>'} must be a finite float, not {value!r}.")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_json_value(item, f"{path}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"Session state at {path or '<root>'} has a non-string key {key!r}.")
            check_json_value(item, f"{path}.{key}" if path else key)
        return
    raise TypeError(
        f"Session state value at {path or '<root>'} has unsupported type {type(value).__name__!r}; "
        "store JSON-compatible values, or register a codec with agent_framework.register_state_type()."
    )
