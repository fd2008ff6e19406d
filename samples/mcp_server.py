"""A sample MCP server for the README's MCP walkthrough (the official ``mcp`` SDK, streamable HTTP):

    python -m samples.mcp_server            # serves http://127.0.0.1:7072/mcp

``local.settings.sample.json`` points ``AGENT_MCP_SERVERS`` at it as server ``notes``: ``list_notes`` and
``read_note`` only read, so the agent calls them freely; ``add_note`` changes something, so each call waits
for a person's approval (``"approval": {"never": ["list_notes", "read_note"]}``). Notes live in memory.
"""

from __future__ import annotations

import argparse

from mcp.server import MCPServer

server = MCPServer("notes", instructions="A tiny notebook: list, read and add notes.")
_NOTES: dict[str, str] = {"welcome": "Notes added through the agent appear here."}


@server.tool()
def list_notes() -> list[str]:
    """The titles of all notes."""
    return sorted(_NOTES)


@server.tool()
def read_note(title: str) -> str:
    """The text of the note called ``title``."""
    return _NOTES.get(title, f"There is no note called {title!r}.")


@server.tool()
def add_note(title: str, text: str) -> str:
    """Add (or replace) the note ``title``."""
    _NOTES[title] = text
    return f"Saved the note {title!r}."


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve the sample notes MCP server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7072)
    args = parser.parse_args(argv)
    uvicorn.run(server.streamable_http_app(streamable_http_path="/mcp"), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
