"""Parsing request bodies: what a body made to be slow costs next to an ordinary one, at two sizes.

Every JSON door parses with ``http.requests.parse_json``. Each hostile body (escaped quotes never closed,
runs of backslashes, deep nesting, many small objects) is timed at a small size and at 16 times that size, in
one run with an ordinary body of the same sizes (a turn carrying one long message): parsing that is linear in
the size grows about 16 times between the two, a backtracking scan about 256 times.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

from stateful_agent.errors import AgentServiceError
from stateful_agent.http.requests import body_limit, parse_json
from testkit.hostile import hostile_bodies, sized

#: The largest body a door reads with the default MAX_MESSAGE_BYTES (32 KB), and a sixteenth of it.
LARGE = body_limit(32 * 1024)
SMALL = LARGE // 16
#: The hostile bodies timed (``testkit.hostile``): a string that never ends, backslashes, nesting, many objects.
NAMES = ("escaped-quotes", "backslash-run", "open-arrays", "many-objects")


def bodies(size: int) -> dict[str, bytes]:
    """The ordinary body (one long message) and each hostile one, ``size`` bytes each."""
    ordinary = sized(b'{"message": "', b"x", size - 2) + b'"}'
    hostile = hostile_bodies(size)
    return {"ordinary": ordinary, **{name: hostile[name] for name in NAMES}}


def _time(body: bytes, repetitions: int) -> float:
    """The median time to parse (or refuse) ``body``, in microseconds."""
    samples = []
    for _ in range(repetitions):
        started = time.perf_counter()
        with contextlib.suppress(AgentServiceError):  # a hostile body is refused: that is what is timed
            parse_json(body)
        samples.append((time.perf_counter() - started) * 1e6)
    return statistics.median(samples)


def run(repetitions: int) -> dict[str, Any]:
    """Median parse time of each body at both sizes, its growth between them, and its ratio to the ordinary body
    of the larger size."""
    small, large = bodies(SMALL), bodies(LARGE)
    results: dict[str, Any] = {"sizes": [SMALL, LARGE], "bodies": {}}
    ordinary = _time(large["ordinary"], repetitions)
    for name in large:
        at_small, at_large = _time(small[name], repetitions), _time(large[name], repetitions)
        results["bodies"][name] = {
            "small_us": round(at_small, 1),
            "large_us": round(at_large, 1),
            "growth_16x_size": round(at_large / max(at_small, 1e-3), 2),
            "vs_ordinary": round(at_large / max(ordinary, 1e-3), 2),
        }
    results["worst_growth_16x_size"] = max(row["growth_16x_size"] for row in results["bodies"].values())
    return results
