"""Two sample tools for the README's walkthrough: ``AGENT_TOOLS=samples.tools:TOOLS``.

- ``get_weather`` only reads (here: a made-up forecast), so the agent calls it freely.
- ``send_payment`` acts on the world, so every call waits for a person's approval
  (``approval_mode="always_require"``); the approval survives restarts in the stored session.

Write your own the same way: a typed function with a docstring, decorated with MAF's ``tool``.
"""

from __future__ import annotations

from typing import Annotated

from agent_framework import tool

_FORECASTS = ("sunny, 21 °C", "cloudy, 14 °C", "light rain, 11 °C", "windy, 9 °C")


@tool
def get_weather(city: Annotated[str, "The city to forecast"]) -> str:
    """Today's weather in a city (a sample: made up, but the same for the same city)."""
    return f"{city}: {_FORECASTS[sum(map(ord, city)) % len(_FORECASTS)]}"


@tool(approval_mode="always_require")
def send_payment(amount_eur: Annotated[float, "Amount in euros"], to: Annotated[str, "Who receives it"]) -> str:
    """Send money to someone (a sample: nothing is sent). Requires a person's approval."""
    return f"Sent {amount_eur:.2f} EUR to {to} (sample tool: no money moved)."


TOOLS = [get_weather, send_payment]
