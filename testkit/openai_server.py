"""A Chat Completions server on loopback that answers the way OpenAI and Azure OpenAI do.

The app's real model path (MAF's ``OpenAIChatCompletionClient`` and the ``openai`` SDK) talks to it over
HTTP, so tests see what a real deployment sees. The wire shapes follow the providers' API references:

- OpenAI (``flavor="openai"``): the first chunk carries ``delta.role``; text arrives in small ``content``
  pieces; a tool call starts with a chunk holding its ``index``, ``id``, ``type`` and ``function.name``
  with empty ``arguments``, then chunks holding only ``index`` and the next piece of ``arguments``;
  parallel calls may interleave by ``index``; the last choice chunk has an empty ``delta`` and the
  ``finish_reason``; with ``stream_options.include_usage`` every chunk has ``"usage": null`` and a last
  chunk has ``"choices": []`` and the usage; then ``data: [DONE]``.
- Azure OpenAI (``flavor="azure"``): the same, after a first chunk with ``"choices": []``, empty ``id`` and
  ``model`` and ``prompt_filter_results``; every choice carries ``content_filter_results``, and an
  asynchronous-filter annotation chunk (a choice with no ``delta``, only ``content_filter_results`` and
  ``content_filter_offsets``) comes before the finish.
- llama.cpp (``repeat_header=True`` on a step): every fragment of a tool call repeats its ``id`` and name.

Non-streamed requests get a whole ``chat.completion`` object. Each request takes the next step of the
script; ``requests`` records the JSON bodies.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from testkit.servers import free_port

Flavor = Literal["openai", "azure"]

_SAFE = {"filtered": False, "severity": "safe"}
_FILTER_RESULTS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}


@dataclass(frozen=True)
class Reply:
    """Script step: the assistant says ``text``, in small pieces; ``finish`` ``None`` closes the stream
    without a finish reason, a usage chunk or ``[DONE]`` (a stream that broke off)."""

    text: str
    finish: str | None = "stop"


@dataclass(frozen=True)
class Call:
    """One tool call: the tool's name and its arguments as the model writes them (JSON text, or not)."""

    name: str
    arguments: str | dict[str, Any]

    @property
    def text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class Calls:
    """Script step: optional ``text``, then the tool ``calls`` with their arguments in fragments.

    ``interleave`` sends the calls' fragments in turn (parallel tool calls as some servers stream them);
    ``repeat_header`` repeats the id and name on every fragment, as llama.cpp does.
    """

    calls: Sequence[Call]
    text: str = ""
    interleave: bool = False
    repeat_header: bool = False
    finish: str | None = "tool_calls"


@dataclass(frozen=True)
class Empty:
    """Script step: HTTP 200 with an event stream that closes at once: no chunk, no ``[DONE]``."""


Step = Reply | Calls | Empty


@dataclass
class ChatCompletionsServer:
    """The server's state: its script, what it was sent, and its URL once started."""

    script: list[Step]
    flavor: Flavor = "openai"
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def next_step(self, body: dict[str, Any]) -> Step:
        self.requests.append(body)
        return self.script.pop(0) if self.script else Reply(f"reply {len(self.requests)}")

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):04d}"


def pieces(text: str) -> list[str]:
    """``text`` cut into fragments of one to three characters (a model's tokens split JSON anywhere)."""
    sizes = itertools.cycle((2, 1, 3))
    out, start = [], 0
    while start < len(text):
        size = next(sizes)
        out.append(text[start : start + size])
        start += size
    return out


def words(text: str) -> list[str]:
    """``text`` cut before each space, as token streams usually arrive."""
    parts = text.split(" ")
    return [part if i == 0 else f" {part}" for i, part in enumerate(parts)]


class _Chunks:
    """Builds the chunks of one streamed completion in the server's flavor."""

    def __init__(self, server: ChatCompletionsServer, body: dict[str, Any]) -> None:
        self.server = server
        self.azure = server.flavor == "azure"
        self.id = server.new_id("chatcmpl-")
        self.model = str(body.get("model") or "test-model")
        self.usage_chunk = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": 1764633600,
            "model": self.model,
            "system_fingerprint": "fp_test",
            "choices": choices,
        }
        if self.usage_chunk:
            out["usage"] = None
        out.update(extra)
        return out

    def choice(self, delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if delta is not None:
            out["delta"] = delta
        if self.azure:
            out["content_filter_results"] = _FILTER_RESULTS if delta and delta.get("content") else {}
        return out

    def prompt_filter(self) -> dict[str, Any]:
        """Azure's first chunk: no choices, the prompt's filter results."""
        return {
            "id": "",
            "object": "",
            "created": 0,
            "model": "",
            "choices": [],
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTER_RESULTS}],
        }

    def annotation(self) -> dict[str, Any]:
        """Azure's asynchronous-filter annotation: a choice without ``delta``."""
        choice = {
            "index": 0,
            "finish_reason": None,
            "content_filter_results": _FILTER_RESULTS,
            "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 10},
        }
        return {"id": "", "object": "", "created": 0, "model": "", "choices": [choice]}

    def usage(self, prompt: int, completion: int) -> dict[str, Any]:
        return self.chunk(
            [],
            usage={
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
        )

    def stream(self, step: Reply | Calls, prompt_tokens: int) -> Iterator[dict[str, Any]]:
        if self.azure:
            yield self.prompt_filter()
        text = step.text
        first: dict[str, Any] = {"role": "assistant", "content": "" if not isinstance(step, Calls) else None}
        first["refusal"] = None
        yield self.chunk([self.choice(first)])
        for piece in words(text) if text else ():
            yield self.chunk([self.choice({"content": piece})])
        if isinstance(step, Calls):
            yield from self.tool_call_chunks(step)
        if step.finish is None:
            return
        if self.azure:
            yield self.annotation()
        yield self.chunk([self.choice({}, step.finish)])
        if self.usage_chunk:
            written = len(text) + sum(len(call.text) for call in step.calls) if isinstance(step, Calls) else len(text)
            yield self.usage(prompt_tokens, max(1, written // 4))

    def tool_call_chunks(self, step: Calls) -> Iterator[dict[str, Any]]:
        ids = [self.server.new_id("call_") for _ in step.calls]

        def header(index: int) -> dict[str, Any]:
            call = step.calls[index]
            return {"index": index, "id": ids[index], "type": "function", "function": {"name": call.name}}

        def fragment(index: int, piece: str) -> dict[str, Any]:
            if step.repeat_header:
                out = header(index)
                out["function"] = {**out["function"], "arguments": piece}
                return out
            return {"index": index, "function": {"arguments": piece}}

        def delta(tool_call: dict[str, Any]) -> dict[str, Any]:
            return self.chunk([self.choice({"tool_calls": [tool_call]})])

        fragments = [[fragment(i, piece) for piece in pieces(call.text)] for i, call in enumerate(step.calls)]
        if not step.interleave:
            for index, call_fragments in enumerate(fragments):
                if not step.repeat_header:
                    yield delta({**header(index), "function": {"name": step.calls[index].name, "arguments": ""}})
                for item in call_fragments:
                    yield delta(item)
            return
        if not step.repeat_header:
            for index in range(len(step.calls)):
                yield delta({**header(index), "function": {"name": step.calls[index].name, "arguments": ""}})
        for row in itertools.zip_longest(*fragments):
            for item in row:
                if item is not None:
                    yield delta(item)


def _completion(server: ChatCompletionsServer, body: dict[str, Any], step: Reply | Calls) -> dict[str, Any]:
    """A whole (non-streamed) ``chat.completion``."""
    message: dict[str, Any] = {"role": "assistant", "content": step.text or None, "refusal": None}
    if isinstance(step, Calls):
        message["tool_calls"] = [
            {"id": server.new_id("call_"), "type": "function", "function": {"name": c.name, "arguments": c.text}}
            for c in step.calls
        ]
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": step.finish, "logprobs": None}
    prompt = _prompt_tokens(body)
    out: dict[str, Any] = {
        "id": server.new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": 1764633600,
        "model": str(body.get("model") or "test-model"),
        "system_fingerprint": "fp_test",
        "choices": [choice],
        "usage": {"prompt_tokens": prompt, "completion_tokens": 5, "total_tokens": prompt + 5},
    }
    if server.flavor == "azure":
        choice["content_filter_results"] = _FILTER_RESULTS
        out["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _FILTER_RESULTS}]
    return out


def _prompt_tokens(body: dict[str, Any]) -> int:
    return max(1, len(json.dumps(body.get("messages", []))) // 4)


class _Handler(BaseHTTPRequestHandler):
    server_state: ChatCompletionsServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        state = self.server_state
        step = state.next_step(body)
        if not body.get("stream"):
            if isinstance(step, Empty):
                step = Reply("", finish=None)
            self._send(200, "application/json", json.dumps(_completion(state, body, step)).encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if isinstance(step, Empty):
            return
        chunks = _Chunks(state, body)
        for chunk in chunks.stream(step, _prompt_tokens(body)):
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()
        if step.finish is not None:
            self.wfile.write(b"data: [DONE]\n\n")

    def _send(self, status: int, media_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def chat_completions_server(script: Sequence[Step] = (), flavor: Flavor = "openai") -> Iterator[ChatCompletionsServer]:
    """Serve ``script`` on a loopback port at any path (OpenAI's ``/v1/chat/completions``, Azure OpenAI's
    ``/openai/deployments/<name>/chat/completions``); yield the server's state with its ``url``."""
    state = ChatCompletionsServer(list(script), flavor)
    handler = type("Handler", (_Handler,), {"server_state": state})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
