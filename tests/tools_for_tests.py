"""Tools for the tests, loaded through AGENT_TOOLS as a real app would: ``tests.tools_for_tests:TOOLS``.

``transfer`` needs approval and records every run: in ``RUNS`` and, when ``TOOL_LOG`` names a file,
as one line there (so a test can count runs across processes).
"""

from __future__ import annotations

import os
from typing import Annotated

from agent_framework import tool

RUNS: list[tuple[int, str]] = []


@tool
def lookup(item: Annotated[str, "What to look up"]) -> str:
    """Look something up (read-only)."""
    return f"{item}: 42"


@tool
def explode() -> str:
    """A tool that always fails."""
    raise RuntimeError("the tool exploded")


@tool(approval_mode="always_require")
def transfer(amount: Annotated[int, "Euros"], to: Annotated[str, "Who"]) -> str:
    """Move money (needs a person's approval)."""
    RUNS.append((amount, to))
    if os.environ.get("TOOL_LOG"):
        with open(os.environ["TOOL_LOG"], "a", encoding="utf-8") as log:
            log.write(f"{os.getpid()} {amount} {to}\n")
    return f"transferred {amount} to {to}"


TOOLS = [lookup, explode, transfer]
