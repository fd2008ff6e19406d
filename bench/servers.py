"""Loopback servers for benchmarks and tests: the local Cosmos DB server, a fake OpenAI endpoint."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_PACKAGE = ROOT / "node_modules" / "@vercel" / "cosmosdb-server" / "lib" / "index.js"
LAUNCHER = ROOT / "scripts" / "cosmosdb-server.js"
#: The well-known Cosmos DB emulator key; the local server accepts any key.
EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="


#: Prefixes of the app's settings (stateful_agent/settings.py); child processes start without them.
_APP_SETTING_PREFIXES = ("MAF_", "COSMOS_", "OPENAI_", "AZURE_OPENAI", "MODEL_PROVIDER", "COMPACTION_", "IDEMPOTENCY_")


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any app setting, plus ``settings``: for child processes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_APP_SETTING_PREFIXES)}
    return {**env, **settings}


class ServerUnavailable(RuntimeError):
    """The local server could not be started."""


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def local_cosmos(timeout: float = 30, *, keep_alive: bool = False) -> Iterator[str]:
    """Run ``@vercel/cosmosdb-server`` (installed by ``npm ci``) on a free loopback port; yield its endpoint.

    ``keep_alive`` keeps connections open between requests, as Azure Cosmos DB does; by default the server
    closes every connection (its CLI's behaviour), so each request pays a TLS handshake.
    """
    node = shutil.which("node")
    if node is None or not SERVER_PACKAGE.is_file():
        raise ServerUnavailable("node or node_modules/@vercel/cosmosdb-server is missing (run `npm ci`)")
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="cosmosdb-server-", suffix=".log")[1])
    with log.open("w") as output:
        command = [node, str(LAUNCHER), "--port", str(port), "--host", "127.0.0.1"]
        process = subprocess.Popen(
            [*command, *(["--keep-alive"] if keep_alive else [])], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + timeout
        while "Ready to accept" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServerUnavailable(f"server did not start: {log.read_text().strip()[-500:]}")
            time.sleep(0.05)
        yield f"https://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.unlink(missing_ok=True)


class _ChatCompletions(BaseHTTPRequestHandler):
    """Answers ``POST /v1/chat/completions`` at once with a fixed assistant message."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 0,
                "model": "bench",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # keep benchmark output clean
        pass


@contextmanager
def fake_openai() -> Iterator[str]:
    """A zero-latency OpenAI-compatible Chat Completions endpoint on loopback; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _ChatCompletions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
