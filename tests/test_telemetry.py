"""OpenTelemetry: one trace per request, from the incoming traceparent to the store write; metrics; logs."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest
from agent_framework.observability import enable_instrumentation
from opentelemetry import trace
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from stateful_agent.platform import telemetry
from testkit.servers import free_port
from testkit.support import CallTool, ModelDown, ScriptedChatClient

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
TURN_ROUTE = "POST /api/sessions/{session_id}/turns"


@pytest.fixture(scope="session")
def otel():
    """In-memory exporters, installed once through the app's own telemetry setup."""
    spans, metrics, logs = InMemorySpanExporter(), InMemoryMetricReader(), InMemoryLogRecordExporter()
    assert telemetry.configure({}, extra=[spans, metrics, logs])
    return spans, metrics, logs


@pytest.fixture
def finished(otel):
    """Reads the spans finished during the test (each read returns those since the previous one)."""
    spans, _, _ = otel
    spans.clear()

    def read() -> list:
        """The spans finished since the last read."""
        trace.get_tracer_provider().force_flush()
        done = list(spans.get_finished_spans())
        spans.clear()
        return done

    return read


async def request(service, method: str, path: str, **kwargs) -> httpx.Response:
    await runtime.install(service)
    headers = {"traceparent": TRACEPARENT, **kwargs.pop("headers", {})}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        return await client.request(method, path, headers=headers, **kwargs)


def by_name(spans: list, name: str) -> list:
    return [s for s in spans if s.name == name]


def tree(spans: list) -> dict[str, list[str]]:
    """Span name -> names of its children."""
    names = {s.context.span_id: s.name for s in spans}
    children: dict[str, list[str]] = {s.name: [] for s in spans}
    for span in spans:
        if span.parent is not None and span.parent.span_id in names:
            children[names[span.parent.span_id]].append(span.name)
    return children


# -- traces ---------------------------------------------------------------------------------------------------


async def test_a_turn_is_one_trace_from_the_traceparent_to_the_conditional_write(make_service, backend, finished):
    service = make_service(backend, ScriptedChatClient(["hi there"], usage=(7, 2)))
    response = await request(service, "POST", "/api/sessions/s1/turns", json={"message": "hello"})
    assert response.status_code == 200
    spans = finished()

    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID}  # one trace, the caller's
    (root,) = by_name(spans, TURN_ROUTE)
    assert root.kind == SpanKind.SERVER
    assert format(root.parent.span_id, "016x") == PARENT_ID
    children = tree(spans)[TURN_ROUTE]
    assert "session.read" in children
    assert "session.create" in children
    assert any(name.startswith("invoke_agent") for name in children)  # MAF's agent span
    (agent,) = [s for s in spans if s.name.startswith("invoke_agent")]
    assert any(name.startswith("chat") for name in tree(spans)[agent.name])  # MAF's chat span, GenAI conventions

    attributes = root.attributes
    assert attributes["session.id"] == "s1"
    assert attributes["stateful_agent.turn"] == 1
    assert attributes["stateful_agent.window.messages"] == 2
    assert attributes["stateful_agent.archived.messages"] == 0
    assert attributes["stateful_agent.snapshot.bytes"] > 100
    assert attributes["stateful_agent.outcome"] == "stored"
    assert attributes["stateful_agent.replayed"] is False
    assert attributes["stateful_agent.conflict"] is False
    assert attributes["http.response.status_code"] == 200
    (write,) = by_name(spans, "session.create")
    assert write.attributes["db.system.name"] in {"azure.cosmosdb", "postgresql", "file", "memory"}
    assert write.attributes["stateful_agent.snapshot.bytes"] == attributes["stateful_agent.snapshot.bytes"]
    if backend == "cosmos":
        (read,) = by_name(spans, "session.read")
        assert read.attributes["azure.cosmosdb.operation.request_charge"] > 0
        assert write.attributes["azure.cosmosdb.operation.request_charge"] > 0
    chat = next(s for s in spans if s.name.startswith("chat"))
    assert chat.attributes["gen_ai.usage.input_tokens"] == 7
    assert chat.attributes["gen_ai.usage.output_tokens"] == 2


async def test_a_streamed_turn_is_traced_until_the_stream_ends(make_service, finished):
    service = make_service("memory", ScriptedChatClient(["a streamed reply"]))
    response = await request(
        service, "POST", "/api/sessions/s1/turns", json={"message": "hi"}, headers={"Accept": "text/event-stream"}
    )
    assert "event: done" in response.text
    spans = finished()
    (root,) = by_name(spans, TURN_ROUTE)
    assert root.attributes["stateful_agent.outcome"] == "stored"
    children = tree(spans)[TURN_ROUTE]
    assert "session.create" in children  # written while streaming, still inside the request's span
    assert any(name.startswith("invoke_agent") for name in children)
    assert root.end_time >= max(s.end_time for s in spans if s is not root)


async def test_a_tool_turn_has_a_span_per_tool_call(make_service, finished):
    model = ScriptedChatClient([CallTool("lookup", {"item": "x"}), "done"])
    service = make_service("memory", model, agent_tools="tests.tools_for_tests:TOOLS")
    assert (await request(service, "POST", "/api/sessions/s1/turns", json={"message": "look"})).status_code == 200
    tools = [s for s in finished() if s.name.startswith("execute_tool")]
    assert len(tools) == 1
    assert tools[0].attributes["gen_ai.tool.name"] == "lookup"
    assert "gen_ai.tool.call.arguments" not in tools[0].attributes  # contents only with sensitive data on


async def test_an_mcp_tool_call_is_traced_with_its_server_and_the_callers_token_never_appears(make_service, finished):
    from stateful_agent.platform.mcp_config import parse_servers
    from testkit.mcp_servers import TokenIssuer, ToolServer

    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    issuer, scope = TokenIssuer(), "api://mine/.default"
    exchanged = issuer.token_for("caller-token-123", scope)
    with ToolServer("mine", {"add": add}, token=exchanged) as server:
        auth = {"type": "caller", "scope": scope}
        config = {"servers": {"mine": {"url": server.url, "readOnly": True, "auth": auth}}}
        servers = parse_servers(json.dumps(config), {}, auth_mode="easyauth", exchange=True)
        model = ScriptedChatClient([CallTool("add", {"a": 1, "b": 2}), "3"])
        service = make_service(
            "memory",
            model,
            mcp_servers=servers,
            auth_mode="easyauth",
            easyauth_local_headers=True,
            auth_client_id="app",
            auth_tenant_id="contoso",
        )
        service.tool_servers.exchange = issuer
        headers = {
            "X-MS-CLIENT-PRINCIPAL-ID": "alice",
            "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
            "Authorization": "Bearer caller-token-123",
        }
        enable_instrumentation(enable_sensitive_data=True)  # even with contents recorded
        try:
            response = await request(
                service, "POST", "/api/sessions/s1/turns", json={"message": "1+2"}, headers=headers
            )
        finally:
            enable_instrumentation(enable_sensitive_data=False)
    assert response.status_code == 200
    assert server.calls == [("add", {"a": 1, "b": 2}, f"Bearer {exchanged}")]
    spans = finished()
    (tool,) = [s for s in spans if s.name == "execute_tool add"]
    assert tool.attributes["mcp.server.name"] == "mine"
    assert "tools/call add" in tree(spans)["execute_tool add"]
    (connect,) = by_name(spans, "mcp connect mine")
    assert connect.attributes["mcp.tools.count"] == 1
    assert any(name.startswith("tools/list") for name in tree(spans)["mcp connect mine"])
    for span in spans:
        texts = [str(v) for v in span.attributes.values()]
        texts += [str(v) for event in span.events for v in (event.attributes or {}).values()]
        assert not [text for text in texts if "caller-token-123" in text or exchanged in text], span.name


async def test_each_mcp_and_a2a_call_is_one_trace_with_its_turn_inside(make_service, finished):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    service = make_service("memory", ScriptedChatClient(["one", "two", "three"]))
    await runtime.install(service)
    transport = httpx2.ASGITransport(app=build_app())
    async with (
        httpx2.AsyncClient(transport=transport, base_url="http://t") as http,
        Client(streamable_http_client("http://t/api/mcp", http_client=http)) as client,
    ):
        await client.call_tool("ask", {"message": "first", "conversation": "c"})
        await client.call_tool("ask", {"message": "second", "conversation": "c"})
    message = {"messageId": "m-1", "role": "ROLE_USER", "parts": [{"text": "third"}]}
    body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}}
    assert (await request(service, "POST", "/api/a2a", json=body)).status_code == 200
    spans = finished()
    agents = [s for s in spans if s.name.startswith("invoke_agent")]
    assert len(agents) == 3
    for agent in agents:  # its trace holds exactly one request (the mcp client's own span may be its root)
        names = [s.name for s in spans if s.context.trace_id == agent.context.trace_id]
        assert names.count("POST /api/mcp") + names.count("POST /api/a2a") == 1
    assert len({agent.context.trace_id for agent in agents}) == 3  # one trace per call
    assert agents[-1].context.trace_id == int(TRACE_ID, 16)  # the caller's traceparent


async def test_an_archiving_turn_traces_the_transcript_write(make_service, finished):
    service = make_service("memory", compaction_max_messages=4)
    for i in range(2):
        await service.run_turn("s1", f"m{i}")
    finished()
    await request(service, "POST", "/api/sessions/s1/turns", json={"message": "m2"})
    spans = finished()
    assert by_name(spans, "session.archive")
    assert by_name(spans, TURN_ROUTE)[0].attributes["stateful_agent.archived.messages"] > 0


async def test_a_conflict_is_a_client_outcome_on_the_span(make_service, finished):
    service = make_service("memory")
    await service.run_turn("s1", "first")
    stale = await service.store.read("s1")
    await service.run_turn("s1", "second")

    async def read_stale(session_id, owner=""):
        return stale

    service.store.read = read_stale
    response = await request(service, "POST", "/api/sessions/s1/turns", json={"message": "loser"})
    assert response.status_code == 409
    (root,) = by_name(finished(), TURN_ROUTE)
    assert root.attributes["stateful_agent.conflict"] is True
    assert root.attributes["error.type"] == "session_conflict"
    assert root.status.status_code != StatusCode.ERROR  # a 4xx is the client's, not the service's


async def test_a_model_failure_is_an_error_span_with_its_code(make_service, finished):
    service = make_service("memory", ScriptedChatClient([ModelDown("down")]))
    response = await request(service, "POST", "/api/sessions/s1/turns", json={"message": "hi"})
    assert response.status_code == 502
    (root,) = by_name(finished(), TURN_ROUTE)
    assert root.status.status_code == StatusCode.ERROR
    assert root.attributes["error.type"] == "model_error"
    assert root.attributes["stateful_agent.outcome"] == "model_error"


async def test_a_replay_is_marked_and_calls_no_model(make_service, finished):
    service = make_service("memory")
    keyed = {"Idempotency-Key": "k-1"}
    await request(service, "POST", "/api/sessions/s1/turns", json={"message": "hi"}, headers=keyed)
    finished()
    await request(service, "POST", "/api/sessions/s1/turns", json={"message": "hi"}, headers=keyed)
    spans = finished()
    (root,) = by_name(spans, TURN_ROUTE)
    assert root.attributes["stateful_agent.replayed"] is True
    assert not [s for s in spans if s.name.startswith(("invoke_agent", "chat"))]
    assert not [s for s in spans if s.name in ("session.create", "session.replace")]


@pytest.mark.parametrize(
    ("method", "path", "route", "store_span"),
    [
        ("GET", "/api/sessions/s1", "GET /api/sessions/{session_id}", "session.read"),
        ("GET", "/api/sessions/s1/messages", "GET /api/sessions/{session_id}/messages", "session.read"),
        ("GET", "/api/sessions", "GET /api/sessions", "session.list"),
        ("DELETE", "/api/sessions/s1", "DELETE /api/sessions/{session_id}", "session.delete"),
    ],
)
async def test_reads_listing_and_deletes_are_traced(make_service, finished, method, path, route, store_span):
    service = make_service("memory")
    await service.run_turn("s1", "hi")
    finished()
    assert (await request(service, method, path)).status_code in (200, 204)
    spans = finished()
    (root,) = by_name(spans, route)
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert store_span in tree(spans)[route]


async def test_the_owner_is_only_an_opaque_hash(make_service, finished):
    service = make_service("memory", auth_mode="easyauth", easyauth_local_headers=True)
    headers = {"X-MS-CLIENT-PRINCIPAL-ID": "alice", "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}
    await request(service, "POST", "/api/sessions/s1/turns", json={"message": "hi"}, headers=headers)
    spans = finished()
    (root,) = by_name(spans, TURN_ROUTE)
    assert root.attributes["stateful_agent.owner"] == hashlib.sha256(b"aad/alice").hexdigest()[:16]
    assert not [s for s in spans for v in s.attributes.values() if "alice" in str(v)]


async def test_message_contents_are_recorded_only_with_sensitive_data_on(make_service, finished):
    service = make_service("memory", ScriptedChatClient(["the secret reply", "again"]))
    await request(service, "POST", "/api/sessions/s1/turns", json={"message": "my secret question"})
    assert not [s for s in finished() for v in s.attributes.values() if "secret" in str(v)]

    enable_instrumentation(enable_sensitive_data=True)
    try:
        await request(service, "POST", "/api/sessions/s1/turns", json={"message": "another secret"})
        assert [s for s in finished() for v in s.attributes.values() if "another secret" in str(v)]
    finally:
        enable_instrumentation(enable_sensitive_data=False)


# -- metrics and logs -------------------------------------------------------------------------------------------


def _points(reader: InMemoryMetricReader) -> dict[str, list]:
    data = reader.get_metrics_data()
    found: dict[str, list] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


async def test_metrics_count_turns_by_outcome_and_measure_store_snapshot_and_tokens(make_service, otel):
    _, reader, _ = otel
    service = make_service("memory", ScriptedChatClient(["ok", ModelDown("x")], usage=(5, 1)))
    await request(service, "POST", "/api/sessions/m1/turns", json={"message": "hi"})
    await request(service, "POST", "/api/sessions/m1/turns", json={"message": "hi"})
    points = _points(reader)
    outcomes = {p.attributes["outcome"]: p.value for p in points["stateful_agent.turns"]}
    assert outcomes["stored"] >= 1
    assert outcomes["model_error"] >= 1
    assert {p.attributes["outcome"] for p in points["stateful_agent.turn.duration"]} >= {"stored", "model_error"}
    assert {p.attributes["operation"] for p in points["stateful_agent.store.duration"]} >= {"read", "create"}
    assert sum(p.count for p in points["stateful_agent.snapshot.size"]) >= 1
    assert "gen_ai.client.token.usage" in points  # MAF's GenAI metric
    assert "gen_ai.client.operation.duration" in points


async def test_a_failed_request_is_logged_once_with_its_trace_id(make_service, otel, caplog):
    _, _, logs = otel
    logs.clear()
    service = make_service("memory", ScriptedChatClient([ModelDown("down")]))
    with caplog.at_level(logging.WARNING):
        await request(service, "POST", "/api/sessions/s1/turns", json={"message": "hi"})
    lines = [r for r in caplog.records if r.name == "stateful_agent.http.problems"]
    assert len(lines) == 1
    assert "502 model_error (session 's1')" in lines[0].getMessage()
    trace.get_tracer_provider().force_flush()
    from opentelemetry._logs import get_logger_provider

    get_logger_provider().force_flush()
    exported = [r for r in logs.get_finished_logs() if "502 model_error" in str(r.log_record.body)]
    assert exported
    assert format(exported[0].log_record.trace_id, "032x") == TRACE_ID


# -- configuration ------------------------------------------------------------------------------------------------


def test_application_insights_is_reached_with_an_entra_credential_never_a_key():
    environ = {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
        "IngestionEndpoint=https://127.0.0.1:9/",
        "AZURE_CLIENT_ID": "identity-client-id",
    }
    exporters = telemetry.azure_monitor_exporters(environ)
    assert [type(e).__name__ for e in exporters] == [
        "AzureMonitorTraceExporter",
        "AzureMonitorMetricExporter",
        "AzureMonitorLogExporter",
    ]
    for exporter in exporters:
        credential = exporter._credential  # the exporter's own record of how it authenticates
        assert type(credential).__name__ == "DefaultAzureCredential"
    assert telemetry.azure_monitor_exporters({}) == []


def test_otlp_is_http_protobuf_and_off_without_an_endpoint():
    from stateful_agent.errors import ConfigurationError

    assert telemetry.otlp_exporters({}) == []
    exporters = telemetry.otlp_exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert [type(e).__name__ for e in exporters] == ["OTLPSpanExporter", "OTLPMetricExporter", "OTLPLogExporter"]
    with pytest.raises(ConfigurationError, match="http/protobuf"):
        telemetry.otlp_exporters(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        )


# -- a real export ---------------------------------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver on loopback: decodes the protobuf trace exports it is sent."""

    spans: ClassVar[list] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self.spans.extend(scope.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_local_host_exports_a_whole_turn_over_otlp_to_a_real_receiver(tmp_path):
    from tests.test_devhost import devhost

    _Receiver.spans = []
    receiver = ThreadingHTTPServer(("127.0.0.1", free_port()), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    settings_file = tmp_path / "local.settings.json"
    values = {
        "MAF_SESSION_BACKEND": "file",
        "MAF_SESSION_DIR": str(tmp_path / "sessions"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    settings_file.write_text(json.dumps({"Values": values}))
    try:
        with devhost(settings_file) as base:
            turn = httpx.post(
                f"{base}/api/sessions/s1/turns", json={"message": "hi"}, headers={"traceparent": TRACEPARENT}
            )
            assert turn.status_code == 200
            deadline = time.monotonic() + 30
            while not any(s.name == TURN_ROUTE for s in _Receiver.spans) and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        receiver.shutdown()
    mine = [s for s in _Receiver.spans if s.trace_id.hex() == TRACE_ID]
    names = {s.name for s in mine}
    assert TURN_ROUTE in names
    assert {"session.read", "session.create"} <= names
    assert any(name.startswith("invoke_agent") for name in names)
    (root,) = [s for s in mine if s.name == TURN_ROUTE]
    assert root.parent_span_id.hex() == PARENT_ID
    ids = {s.span_id for s in mine}
    assert all(s.parent_span_id in ids for s in mine if s is not root)  # the trace arrived whole
