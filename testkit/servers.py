"""Loopback servers for benchmarks and tests: the local Cosmos DB server, a PostgreSQL server, a fake OpenAI
endpoint."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
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
_APP_SETTING_PREFIXES = (
    "MAF_",
    "COSMOS_",
    "POSTGRES_",
    "OPENAI_",
    "AZURE_OPENAI",
    "MODEL_PROVIDER",
    "COMPACTION_",
    "IDEMPOTENCY_",
)


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


def postgres_binaries() -> Path | None:
    """The directory of the PostgreSQL server programs (``POSTGRES_BIN_DIR``, Debian's newest
    ``/usr/lib/postgresql/<n>/bin``, or ``initdb`` on the PATH), or ``None``."""
    candidates = [os.environ.get("POSTGRES_BIN_DIR", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    initdb = shutil.which("initdb")
    candidates.append(str(Path(initdb).resolve().parent) if initdb else "")
    return next((Path(c) for c in candidates if c and (Path(c) / "postgres").is_file()), None)


class LocalPostgres:
    """A throwaway PostgreSQL server on a free loopback port, in a temporary directory.

    Durability is off (``fsync``, ``full_page_writes``), which a clean ``stop`` does not need;
    ``pg_stat_statements`` is loaded so that tests can count statements. As root, the server runs as the
    ``postgres`` user that Debian's package creates (PostgreSQL refuses to run as root).
    """

    def __init__(self, timeout: float = 30, *, password: str | None = None) -> None:
        """``password``: the superuser's, and every loopback login needs one (SCRAM); else logins are trusted."""
        self.password = password
        self.binaries = postgres_binaries()
        if self.binaries is None:
            raise ServerUnavailable("PostgreSQL server programs not found (Debian: apt-get install postgresql)")
        self.port = free_port()
        self.timeout = timeout
        self.user = "postgres" if os.geteuid() == 0 else None
        self.folder = Path(tempfile.mkdtemp(prefix="stateful-agent-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        if self.user:
            try:
                account = pwd.getpwnam(self.user)
            except KeyError:
                raise ServerUnavailable(
                    "running as root needs the 'postgres' user (Debian's postgresql package)"
                ) from None
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        auth = ["-A", "trust"]
        if password is not None:
            secret = self.folder / "pwfile"
            secret.write_text(password)
            if self.user:
                os.chown(secret, account.pw_uid, account.pw_gid)
            auth = ["-A", "scram-sha-256", f"--pwfile={secret}"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", *auth, "-E", "UTF8", "--no-sync")

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection string for ``database`` as the superuser ``postgres``."""
        secret = f" password={self.password}" if self.password is not None else ""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database} connect_timeout=5{secret}"

    def create_database(self) -> str:
        """Create an empty database; return its connection string."""
        import psycopg
        from psycopg import sql

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='{self.folder}' "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=200 "
            "-c shared_preload_libraries=pg_stat_statements"
        )
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            str(int(self.timeout)),
        )

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        assert self.binaries is not None
        completed = subprocess.run(
            [str(self.binaries / program), *args],
            cwd=self.folder,
            user=self.user,
            capture_output=True,
            text=True,
            timeout=self.timeout + 30,
            check=False,
        )
        if completed.returncode != 0:
            log = self.log.read_text(errors="replace")[-1000:] if self.log.exists() else ""
            raise ServerUnavailable(f"{program} failed: {completed.stderr.strip()[-1000:]} {log}")


@contextmanager
def local_postgres(timeout: float = 30, *, password: str | None = None) -> Iterator[LocalPostgres]:
    """Start a ``LocalPostgres``; stop it and remove its files afterwards."""
    server = LocalPostgres(timeout, password=password)
    try:
        server.start()
        yield server
    finally:
        server.close()


class _ChatCompletions(BaseHTTPRequestHandler):
    """Answers any ``POST`` at once with a Chat Completions response holding ``reply``; appends each request's
    line and headers to ``seen`` when that is a list."""

    reply = "ok"
    seen: list[bytes] | None = None

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.seen is not None:
            self.seen.append(f"{self.requestline}\r\n{self.headers}".encode("latin-1"))
        message = {"role": "assistant", "content": self.reply}
        body = json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 0,
                "model": "bench",
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
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
def fake_openai(reply: str = "ok", seen: list[bytes] | None = None) -> Iterator[str]:
    """A zero-latency Chat Completions endpoint on loopback answering ``reply`` at any path (OpenAI's
    ``/v1/chat/completions``, Azure OpenAI's ``/openai/deployments/...``); yields its root URL. Each request's
    line and headers are appended to ``seen`` when given."""
    handler = type("ChatCompletions", (_ChatCompletions,), {"reply": reply, "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
