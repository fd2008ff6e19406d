"""One cold process for the cold-start benchmark: ``python -m bench.cold_child import|turn|host|libs``.

Prints one JSON line: milliseconds spent importing (and serving the first turn), and peak RSS.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time


def _rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss would carry the parent's peak over exec)."""
    try:
        with open("/proc/self/status") as handle:
            status = handle.read()
        return round(int(status.split("VmHWM:")[1].split()[0]) / 1024, 1)
    except (OSError, IndexError, ValueError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


async def _first_turn(function_app) -> int:
    """Call the registered function with a FastAPI request, as the Functions worker does."""
    from starlette.requests import Request

    body = json.dumps({"message": "hello from a cold process"}).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/sessions/cold/turns",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "path_params": {"session_id": "cold"},
    }

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    response = await function_app.post_turn(Request(scope, receive))
    return response.status_code


def main(mode: str) -> None:
    started = time.perf_counter()
    result: dict[str, float | int] = {}
    if mode == "host":  # what indexing any HTTP-streams function app imports
        import azure.functions
        import azurefunctions.extensions.http.fastapi
    elif mode == "libs":  # what a Cosmos + OpenAI-compatible turn cannot avoid importing
        import aiohttp  # noqa: F401
        import azure.cosmos.aio
        import azure.functions  # noqa: F401
        import azurefunctions.extensions.http.fastapi  # noqa: F401
        import openai  # noqa: F401
        from agent_framework import Agent  # noqa: F401
        from agent_framework.openai import OpenAIChatCompletionClient  # noqa: F401
    else:
        import function_app

        result["import_ms"] = round((time.perf_counter() - started) * 1000, 1)
        if mode == "turn":
            turn_started = time.perf_counter()
            result["status"] = asyncio.run(_first_turn(function_app))
            result["turn_ms"] = round((time.perf_counter() - turn_started) * 1000, 1)
    result["total_ms"] = round((time.perf_counter() - started) * 1000, 1)
    result["rss_mb"] = _rss_mb()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
