"""Azure Functions entry point: the routes, and nothing else. Handlers live in ``stateful_agent.api``."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from stateful_agent import api

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="sessions/{session_id}/turns", methods=["POST"])
async def post_turn(req: Request) -> Response:
    return await api.post_turn(req)


@app.route(route="sessions/{session_id}/messages", methods=["GET"])
async def get_messages(req: Request) -> Response:
    return await api.get_messages(req)


@app.route(route="sessions", methods=["POST"])
async def create_session(req: Request) -> Response:
    return await api.create_session(req)


@app.route(route="sessions/{session_id}", methods=["GET"])
async def get_session(req: Request) -> Response:
    return await api.get_session(req)


@app.route(route="sessions/{session_id}", methods=["DELETE"])
async def delete_session(req: Request) -> Response:
    return await api.delete_session(req)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: Request) -> Response:
    return await api.health(req)
