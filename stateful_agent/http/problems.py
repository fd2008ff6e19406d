"""Errors as RFC 9457 problem documents, one place for every route: each exception becomes an
``application/problem+json`` response with a stable ``code``; a stack trace only ever goes to the log."""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ..errors import AgentServiceError, printable
from ..platform.settings import route_prefix
from ..state.jsontext import encode_json

logger = logging.getLogger(__name__)

PROBLEM_TYPE_PREFIX = "urn:stateful-agent:problem:"
_FALLBACK_PROBLEM = (
    b'{"type":"urn:stateful-agent:problem:internal_error","title":"Internal server error","status":500,'
    b'"detail":"An unexpected error occurred; it was logged.","code":"internal_error"}'
)

Handler = Callable[[Request], Awaitable[Response]]


class StrictJSONResponse(JSONResponse):
    """A response body (``bodies.Body``) or JSON value, rendered strictly (no ``NaN``) and safely (a lone
    surrogate becomes its escape, never an error)."""

    def render(self, content: Any) -> bytes:
        # a response body (sessions.bodies.Body; its module loads with the service, not at indexing)
        return encode_json(content.as_json() if isinstance(content, BaseModel) else content)


def problem(error: AgentServiceError, instance: str | None = None, *, detail: bool = True) -> dict[str, Any]:
    """The RFC 9457 problem document of an error (without its ``detail`` when ``detail`` is false)."""
    body: dict[str, Any] = {
        **error.extra,
        "type": PROBLEM_TYPE_PREFIX + error.code,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
    }
    if not detail:
        del body["detail"]
    if instance:
        body["instance"] = printable(instance, 2048)
    return body


def problem_response(error: AgentServiceError, instance: str | None = None, *, detail: bool = True) -> Response:
    """The ``application/problem+json`` response for an error; rendering it never fails."""
    try:
        return StrictJSONResponse(
            problem(error, instance, detail=detail),
            status_code=error.status,
            headers=error.headers,
            media_type="application/problem+json",
        )
    except Exception:
        logger.exception("Could not render the problem document of %s", type(error).__name__)
        return Response(_FALLBACK_PROBLEM, status_code=500, media_type="application/problem+json")


Renderer = Callable[[AgentServiceError, str], Response]


def served(method: str, route: str, render: Renderer | None = None) -> Callable[[Handler], Handler]:
    """Serve ``method`` on ``route`` (as ``function_app`` registers it, without the host's route prefix)
    inside a span joined to the request's ``traceparent``; turn every exception into an error response
    (``render``: a problem document unless the protocol has its own shape), and log each failed request once
    (its code, status, session id, and what the client must not see; a traceback only for the unexpected)."""
    render = render or problem_response

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(req: Request) -> Response:
            from ..platform import telemetry  # with opentelemetry's API: loaded on the first request, not at indexing

            label = f"{method} /{'/'.join(part for part in (route_prefix(), route) if part)}"
            span = telemetry.request_span(label, req.method, req.headers)
            with telemetry.active(span):
                try:
                    response = await handler(req)
                except Exception as exc:
                    error = exc if isinstance(exc, AgentServiceError) else unexpected(exc)
                    log_problem(req, error)
                    telemetry.record_problem(span, error.code, error.status, error.unexpected)
                    response = render(error, req.url.path)
            span.set_attribute("http.response.status_code", response.status_code)
            if not getattr(response, "ends_span", False):  # a stream ends the span when it ends
                span.end()
            _warmed_up()
            return response

        wrapper.served = (method, route)  # type: ignore[attr-defined]  # function_app's route, for its drift test
        return wrapper

    return decorate


_warm = False


def _warmed_up() -> None:
    """After the first request: freeze what startup allocated (later collections skip it) and collect again.

    ``function_app`` turns the garbage collector off while the app imports and serves its first request,
    which a cold start spends mostly allocating.
    """
    global _warm
    if not _warm:
        _warm = True
        gc.freeze()
        gc.enable()


def unexpected(exc: Exception) -> AgentServiceError:
    return AgentServiceError(
        "An unexpected error occurred; it was logged.", internal=f"{type(exc).__name__}: {exc}", unexpected=exc
    )


def log_problem(req: Request, error: AgentServiceError, stream: bool = False) -> None:
    """One line per failed request: method, path, status, code, session id and the internal detail."""
    level = logging.ERROR if error.status >= 500 else logging.WARNING
    logger.log(
        level,
        "%s %s%s -> %d %s (session %r)%s",
        req.method,
        req.url.path,
        " (stream)" if stream else "",
        error.status,
        error.code,
        req.path_params.get("session_id"),
        f": {error.internal}" if error.internal else "",
        exc_info=error.unexpected,
    )
