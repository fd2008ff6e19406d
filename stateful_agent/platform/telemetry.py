"""OpenTelemetry: one trace per request, the app's metrics, and logs that carry trace ids.

``configure`` installs the providers once per process, lazily, from the environment:

- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or a signal's own ``..._TRACES_ENDPOINT`` etc.): OTLP over HTTP/protobuf;
  the exporters read the standard ``OTEL_EXPORTER_OTLP_*`` variables themselves.
- ``APPLICATIONINSIGHTS_CONNECTION_STRING``: Azure Monitor, authenticated with Microsoft Entra ID
  (``DefaultAzureCredential``: the managed identity of ``AZURE_CLIENT_ID`` in Azure), never a key.
- Neither: nothing is installed. The API's no-op providers stay, and spans cost next to nothing.

MAF instruments the agent itself (``invoke_agent``, ``chat``, ``execute_tool`` spans with the GenAI
conventions, and its ``gen_ai.client.*`` metrics); the app adds the request, store and turn details.
Message and tool contents are recorded only with MAF's ``ENABLE_SENSITIVE_DATA=true``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ..errors import ConfigurationError

logger = logging.getLogger(__name__)

SERVICE_NAME = "stateful-agent"
_OTLP_ENDPOINTS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
)

tracer = trace.get_tracer("stateful_agent")
_meter = metrics.get_meter("stateful_agent")
turns = _meter.create_counter(
    "stateful_agent.turns",
    unit="{turn}",
    description="Turns by outcome: stored, replayed, or the problem code.",
)
turn_duration = _meter.create_histogram(
    "stateful_agent.turn.duration", unit="s", description="Duration of a turn request, by outcome."
)
store_duration = _meter.create_histogram(
    "stateful_agent.store.duration", unit="s", description="Duration of a session store operation."
)
snapshot_size = _meter.create_histogram(
    "stateful_agent.snapshot.size", unit="By", description="Size of a stored session snapshot."
)

_lock = threading.Lock()
_configured = False
_exporting = False


def configure(environ: dict[str, str] | None = None, *, extra: Sequence[Any] = ()) -> bool:
    """Install tracing, metrics and log export once per process; later calls do nothing.

    ``extra`` adds span exporters, metric readers or log exporters (tests use in-memory ones).
    Returns whether anything exports.

    Raises:
        ConfigurationError: ``OTEL_EXPORTER_OTLP_PROTOCOL`` names a protocol other than HTTP/protobuf.
    """
    global _configured, _exporting
    env = os.environ if environ is None else environ
    with _lock:
        if _exporting:
            return True
        exporters = [*otlp_exporters(env), *azure_monitor_exporters(env), *extra]
        _configured = True
        if exporters:
            _install(exporters, env)
            _exporting = True
            logger.info("OpenTelemetry export on: %s", ", ".join(sorted({type(e).__name__ for e in exporters})))
        return _exporting


def otlp_exporters(env: dict[str, str] | os._Environ[str]) -> list[Any]:
    """The OTLP/HTTP span, metric and log exporters ``env`` asks for (none without an OTLP endpoint).

    Raises:
        ConfigurationError: ``OTEL_EXPORTER_OTLP_PROTOCOL`` names a protocol other than HTTP/protobuf.
    """
    if not any(env.get(name, "").strip() for name in _OTLP_ENDPOINTS):
        return []
    protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip() or "http/protobuf"
    if protocol != "http/protobuf":
        raise ConfigurationError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: this app exports OTLP over http/protobuf.")
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return [OTLPSpanExporter(), OTLPMetricExporter(), OTLPLogExporter()]


def azure_monitor_exporters(env: dict[str, str] | os._Environ[str]) -> list[Any]:
    """Application Insights exporters with Microsoft Entra ID, when ``env`` has a connection string."""
    connection_string = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    if not connection_string:
        return []
    from azure.identity import DefaultAzureCredential
    from azure.monitor.opentelemetry.exporter import (
        AzureMonitorLogExporter,
        AzureMonitorMetricExporter,
        AzureMonitorTraceExporter,
    )

    # Microsoft Entra ID only: Application Insights has local (key) authentication turned off.
    credential = DefaultAzureCredential(managed_identity_client_id=env.get("AZURE_CLIENT_ID") or None)
    options = {"connection_string": connection_string, "credential": credential}
    return [
        AzureMonitorTraceExporter(**options),
        AzureMonitorMetricExporter(**options),
        AzureMonitorLogExporter(**options),
    ]


def _install(exporters: Sequence[Any], env: dict[str, str] | os._Environ[str]) -> None:
    from agent_framework.observability import create_resource, enable_instrumentation
    from opentelemetry._logs import set_logger_provider  # the logs API is still underscored in OpenTelemetry
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    resource = create_resource(service_name=env.get("OTEL_SERVICE_NAME") or SERVICE_NAME)
    tracer_provider = TracerProvider(resource=resource)
    readers: list[MetricReader] = []
    logger_provider = LoggerProvider(resource=resource)
    for exporter in exporters:
        if isinstance(exporter, SpanExporter):
            tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        elif isinstance(exporter, MetricExporter):
            readers.append(PeriodicExportingMetricReader(exporter))
        elif isinstance(exporter, MetricReader):
            readers.append(exporter)
        elif isinstance(exporter, LogRecordExporter):
            logger_provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    set_logger_provider(logger_provider)
    logging.getLogger().addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))
    # MAF's own spans and metrics, with contents only when ENABLE_SENSITIVE_DATA=true (off by default).
    enable_instrumentation(enable_sensitive_data=env.get("ENABLE_SENSITIVE_DATA", "").strip().lower() == "true")


def request_span(route: str, method: str, headers: Any) -> Span:
    """The span of one HTTP request: a child of the context the Functions worker attached, or else of the
    request's ``traceparent`` (W3C Trace Context), as a server span."""
    if trace.get_current_span().get_span_context().is_valid:
        context, kind = None, SpanKind.INTERNAL
    else:
        context, kind = propagate.extract(headers), SpanKind.SERVER
    return tracer.start_span(
        route,
        context=context,
        kind=kind,
        attributes={"http.request.method": method, "http.route": route.split(" ", 1)[-1]},
    )


def active(span: Span) -> Any:
    """Make ``span`` current without ending it or recording exceptions (the caller decides both)."""
    return trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False)


class Turn:
    """One turn request as telemetry sees it: the request span's attributes, the outcome count, the duration."""

    def __init__(self) -> None:
        self.span = trace.get_current_span()
        self.started = time.perf_counter()
        self.outcome: str | None = None

    def identify(self, session_id: str, owner: str) -> None:
        self.span.set_attribute("session.id", session_id)
        if owner:
            self.span.set_attribute("stateful_agent.owner", owner_hash(owner))

    def done(self, outcome: str) -> None:
        """Count the turn once, by outcome: ``stored``, ``replayed``, ``abandoned`` or the problem code."""
        if self.outcome is not None:
            return
        self.outcome = outcome
        turns.add(1, {"outcome": outcome})
        turn_duration.record(time.perf_counter() - self.started, {"outcome": outcome})
        self.span.set_attribute("stateful_agent.outcome", outcome)
        self.span.set_attribute("stateful_agent.replayed", outcome == "replayed")
        self.span.set_attribute("stateful_agent.conflict", outcome == "session_conflict")

    def failed(self, error: Any) -> None:
        record_problem(self.span, error.code, error.status, error.unexpected)
        self.done(error.code)

    @contextmanager
    def streaming(self) -> Iterator[None]:
        """Run a stream inside the request's span, and end the span when the stream ends."""
        try:
            with active(self.span):
                yield
        finally:
            self.span.end()


def turn_stored(*, turn: int, window: int, archived: int, snapshot_bytes: int) -> None:
    """Describe the stored turn on the current (request) span."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(
            {
                "stateful_agent.turn": turn,
                "stateful_agent.window.messages": window,
                "stateful_agent.archived.messages": archived,
                "stateful_agent.snapshot.bytes": snapshot_bytes,
            }
        )


def snapshot_written(size: int) -> None:
    """Record the size of a snapshot just written (on the current store span, and as a metric)."""
    if size:
        snapshot_size.record(size)
        trace.get_current_span().set_attribute("stateful_agent.snapshot.bytes", size)


def request_charge(headers: Any) -> None:
    """Put Cosmos DB's request charge of the response on the current (store) span."""
    charge = headers.get("x-ms-request-charge") if headers else None
    span = trace.get_current_span()
    if charge and span.is_recording():
        with contextlib.suppress(ValueError):
            span.set_attribute("azure.cosmosdb.operation.request_charge", float(charge))


def owner_hash(owner: str) -> str:
    """An opaque, stable stand-in for an owner in telemetry (never the identity itself)."""
    return hashlib.sha256(owner.encode("utf-8")).hexdigest()[:16] if owner else ""


def record_problem(span: Span, code: str, status: int, exception: BaseException | None = None) -> None:
    """Mark ``span`` as failed with the problem ``code`` (a 5xx is an error; a 4xx is the client's)."""
    span.set_attribute("error.type", code)
    span.set_attribute("stateful_agent.problem.code", code)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, code))
        if exception is not None:
            span.record_exception(exception)


@contextmanager
def store_operation(operation: str, backend: str, session_id: str) -> Iterator[Span]:
    """A span and a duration measurement around one session store operation."""
    started = time.perf_counter()
    attributes = {"db.system.name": _DB_SYSTEMS.get(backend, backend), "db.operation.name": operation}
    if session_id:
        attributes["session.id"] = session_id
    with tracer.start_as_current_span(
        f"session.{operation}", attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        outcome = "ok"
        try:
            yield span
        except BaseException as exc:
            outcome = getattr(exc, "code", type(exc).__name__)
            record_problem(span, outcome, getattr(exc, "status", 500), exc)
            raise
        finally:
            store_duration.record(
                time.perf_counter() - started, {"operation": operation, "backend": backend, "outcome": outcome}
            )


_DB_SYSTEMS = {"cosmos": "azure.cosmosdb", "postgres": "postgresql", "file": "file", "memory": "memory"}
