"""The agent's own tools, named by ``AGENT_TOOLS``: a comma-separated list of ``module:attribute``.

Each attribute is a MAF tool (a function decorated with ``agent_framework.tool``, which also sets
``approval_mode``), a plain function (MAF turns it into a tool), or a list or tuple of them. Modules
are imported once per process, when the agent is built; they only need to be importable (the app's
folder, or anything on ``PYTHONPATH``).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

from agent_framework import FunctionTool

from ..errors import ConfigurationError

_REFERENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")

Tool = FunctionTool | Callable[..., Any]


def load_tools(spec: str | None) -> list[Tool]:
    """The tools ``spec`` names, in order.

    Raises:
        ConfigurationError: A reference is malformed, cannot be imported, or names something that is
            not a tool (the message names the reference).
    """
    tools: list[Tool] = []
    for reference in (part.strip() for part in (spec or "").split(",")):
        if not reference:
            continue
        if not _REFERENCE.fullmatch(reference):
            raise ConfigurationError(f"AGENT_TOOLS: {reference!r} is not 'module:attribute'.")
        module_name, attribute = reference.split(":")
        try:
            value = getattr(importlib.import_module(module_name), attribute)
        except Exception as exc:  # ImportError, AttributeError, or the module failing as it loads
            raise ConfigurationError(f"AGENT_TOOLS: cannot load {reference!r}: {type(exc).__name__}: {exc}") from None
        items = value if isinstance(value, list | tuple) else [value]
        if not items:
            raise ConfigurationError(f"AGENT_TOOLS: {reference!r} is an empty list: it names no tool.")
        for item in items:
            if not (isinstance(item, FunctionTool) or inspect.isfunction(item) or inspect.ismethod(item)):
                raise ConfigurationError(
                    f"AGENT_TOOLS: {reference!r} holds a {type(item).__name__}, not a tool (a function "
                    "decorated with agent_framework.tool, a plain function, or a list of them)."
                )
            tools.append(item)
    return tools
