"""Request bodies made to be slow to parse, for the hardening tests and the benchmark."""

from __future__ import annotations


def sized(prefix: bytes, unit: bytes, size: int) -> bytes:
    """``prefix`` followed by ``unit`` repeated, padded with spaces to exactly ``size`` bytes."""
    body = prefix + unit * ((size - len(prefix)) // len(unit))
    return body + b" " * (size - len(body))


def hostile_bodies(size: int) -> dict[str, bytes]:
    """Bodies of exactly ``size`` bytes that a backtracking or recursive parser spends long on: one ``"`` then
    escaped quotes never closed (a backtracking string pattern retries from every quote), quote runs, a run of
    backslashes, open arrays, open objects, and many small objects."""
    return {
        "escaped-quotes": sized(b'{"message": "', b'\\"', size),
        "quote-runs": sized(b'{"message": ', b'"\\"', size),
        "backslash-run": sized(b'{"message": "', b"\\", size),
        "open-arrays": sized(b"", b"[", size),
        "open-objects": sized(b"", b'{"a":', size),
        "many-objects": sized(b"[", b"{},", size),
    }
