"""Strict JSON shared by the HTTP layer, the stores and the platform (no agent or cloud SDK imports): encoding,
and decoding untrusted text in time linear in its size with a bounded depth."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import Any

# Each pattern matches at a fixed length or by one character class, so a scan is linear in the text.
_ESCAPE = re.compile(r"\\.", re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nesting(text: str) -> int:
    """How deep JSON text nests arrays and objects (brackets inside strings do not count), in one linear pass.

    Escape pairs go first (``\\"`` cannot end a string, ``\\\\`` is one character), so every remaining ``"``
    opens or closes a string: the text outside strings is every other piece between quotes. For text that is
    not JSON the answer is only an estimate, which the parser then refuses.
    """
    outside = "".join(_ESCAPE.sub("", text).split('"')[::2])
    return max(accumulate(map(_DEPTH_STEP.__getitem__, _NOT_BRACKET.sub("", outside)), initial=0))


class TooDeepError(ValueError):
    """JSON text nests deeper than allowed."""


def decode_json(text: str, max_depth: int) -> Any:
    """The JSON value of ``text``, nested at most ``max_depth`` deep; costs time linear in its size and never
    exhausts the stack.

    Raises:
        TooDeepError: It nests deeper than ``max_depth``.
        ValueError: It is not JSON.
    """
    if nesting(text) > max_depth:
        raise TooDeepError(f"JSON nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except RecursionError:  # only for text that is not JSON after all: the scan estimated low
        raise TooDeepError(f"JSON nests deeper than {max_depth} levels") from None


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
