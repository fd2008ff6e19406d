"""A small local host for the function app, for machines without Azure Functions Core Tools.

    python -m stateful_agent.devhost --host 127.0.0.1 --port 7071

It serves the functions registered on ``function_app.app``: routes, methods and
handlers are read from ``app.get_functions()`` and the route prefix from
``host.json``, so there is no second routing table. Like ``func start`` it loads
``local.settings.json`` (existing environment variables win). For local use and
tests only: it does not check function keys and knows only HTTP triggers.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .platform import settings as app_settings

APP_ROOT = app_settings.APP_ROOT
_LOCAL_USER = re.compile(r"[A-Za-z0-9._@-]{1,64}")


def build_app(function_app: Any = None, *, route_prefix: str | None = None, user: str | None = None) -> ASGIApp:
    """An ASGI app serving every HTTP-triggered function of ``function_app``.

    With ``user``, a request that carries no ``X-MS-CLIENT-PRINCIPAL-ID`` gets the headers Easy Auth would
    inject for that user (provider ``aad``), so a browser or curl acts as them without setting headers.
    """
    if function_app is None:
        if str(APP_ROOT) not in sys.path:
            sys.path.insert(0, str(APP_ROOT))
        from function_app import app as function_app
    prefix = route_prefix if route_prefix is not None else app_settings.route_prefix()
    routes = []
    for function, trigger in http_functions(function_app):
        path = "/" + "/".join(part.strip("/") for part in (prefix, trigger.route) if part)
        methods = [str(getattr(m, "value", m)) for m in trigger.methods or ["GET", "POST", "PUT", "DELETE", "PATCH"]]
        routes.append(Route(path, _endpoint(function.get_user_function()), methods=methods))
    starlette = Starlette(routes=routes, exception_handlers={HTTPException: _http_error}, lifespan=_lifespan)
    app: ASGIApp = _KeepEncodedSlashes(starlette)
    return _ActAs(app, user) if user else app


@contextlib.asynccontextmanager
async def _lifespan(_: Any) -> AsyncIterator[None]:
    """On shutdown, close the service's store clients and MCP connections."""
    yield
    from .runtime import install

    await install(None)


@functools.cache
def http_functions(function_app: Any) -> tuple[tuple[Any, Any], ...]:
    """Each HTTP-triggered function with its trigger binding (indexed once, as the worker does)."""
    pairs = []
    for function in function_app.get_functions():
        trigger = next((b for b in function.get_bindings() if b.type == "httpTrigger"), None)
        if trigger is not None:
            pairs.append((function, trigger))
    return tuple(pairs)


def _endpoint(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handler(request)

    endpoint.__name__ = handler.__name__
    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown routes and wrong methods, as problem documents (the Functions host answers these itself)."""
    from .errors import MethodNotAllowedError, RouteNotFoundError
    from .http.problems import problem_response

    detail = f"{request.method} {request.url.path}"
    if getattr(exc, "status_code", 404) == 405:
        error = MethodNotAllowedError(detail, headers=dict(getattr(exc, "headers", None) or {}))
    else:
        error = RouteNotFoundError(detail)
    return problem_response(error, request.url.path)


class _KeepEncodedSlashes:
    """Match routes like the Functions host: ``%2F`` inside a path segment stays encoded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path")
        if scope["type"] == "http" and raw:
            raw_path = raw.decode("latin-1").split("?", 1)[0]
            segments = [unquote(segment).replace("/", "%2F") for segment in raw_path.split("/")]
            scope = {**scope, "path": "/".join(segments)}
        await self.app(scope, receive, send)


class _ActAs:
    """Add the identity headers of a signed-in ``user`` to requests that carry none (local runs only)."""

    def __init__(self, app: ASGIApp, user: str) -> None:
        self.app = app
        self.headers = [
            (b"x-ms-client-principal-id", user.encode("latin-1")),
            (b"x-ms-client-principal-idp", b"aad"),
            (b"x-ms-client-principal-name", user.encode("latin-1")),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not any(name == b"x-ms-client-principal-id" for name, _ in scope["headers"]):
            scope = {**scope, "headers": [*scope["headers"], *self.headers]}
        await self.app(scope, receive, send)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve function_app locally (no Core Tools needed).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument(
        "--settings-file",
        default=str(APP_ROOT / "local.settings.json"),
        help="local.settings.json to load; '' to load none",
    )
    parser.add_argument(
        "--tools",
        metavar="REFS",
        help="AGENT_TOOLS to use when neither the environment nor the settings file sets it "
        "(./scripts/run-local: the sample tools, samples.tools:TOOLS)",
    )
    parser.add_argument(
        "--user",
        help="act as this signed-in user: AUTH_MODE=easyauth with local identity headers (try two users locally)",
    )
    args = parser.parse_args(argv)
    if args.user is not None and not _LOCAL_USER.fullmatch(args.user):
        parser.exit(2, "error: --user takes 1-64 letters, digits, '.', '_', '@' or '-'\n")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.user:
        os.environ.update(AUTH_MODE="easyauth", EASYAUTH_LOCAL_HEADERS="true")
    from .platform.settings import load_local_settings

    if args.settings_file and Path(args.settings_file).is_file():
        loaded = load_local_settings(Path(args.settings_file))
        logging.getLogger(__name__).info("Loaded %d setting(s) from %s", loaded, args.settings_file)
    if args.tools and "AGENT_TOOLS" not in os.environ:
        os.environ["AGENT_TOOLS"] = args.tools
    from .errors import ConfigurationError
    from .runtime import get_service

    try:
        service = get_service()  # fail fast on bad settings
        _ = service.agent  # and on tools that cannot be loaded (building the agent makes no network call)
    except ConfigurationError as error:
        parser.exit(2, f"error: {error.detail}\n")
    logging.getLogger(__name__).info(
        "Local host (not for production): backend=%s model=%s on http://%s:%d/api",
        service.settings.backend,
        service.settings.model_label,
        args.host,
        args.port,
    )
    prefix = app_settings.route_prefix()
    if service.settings.chat_ui:
        path = "/".join(part for part in (prefix.strip("/"), "ui") if part)
        print(f"Chat page: http://{args.host}:{args.port}/{path}", flush=True)
    import uvicorn

    if args.user:
        logging.getLogger(__name__).info("Acting as user %r (AUTH_MODE=easyauth, local identity headers)", args.user)
    uvicorn.run(build_app(route_prefix=prefix, user=args.user), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
