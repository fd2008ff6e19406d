"""Azure Functions entry point: the routes, and nothing else. Handlers live in ``stateful_agent.http.routes`` and
``stateful_agent.http.responses_api.routes``."""

import gc
from types import ModuleType

gc.disable()  # a cold start allocates much and frees little: no collections until the first request is served

import azure.functions as func  # noqa: E402
from azurefunctions.extensions.http.fastapi import Request, Response  # noqa: E402

from stateful_agent.http import routes  # noqa: E402
from stateful_agent.platform.settings import anonymous_session_routes  # noqa: E402

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
# AUTH_MODE=easyauth: Easy Auth authenticates the callers, who hold no function keys.
SESSIONS = func.AuthLevel.ANONYMOUS if anonymous_session_routes() else func.AuthLevel.FUNCTION


@app.route(route="sessions/{session_id}/turns", methods=["POST"], auth_level=SESSIONS)
async def post_turn(req: Request) -> Response:
    return await routes.post_turn(req)


@app.route(route="sessions/{session_id}/messages", methods=["GET"], auth_level=SESSIONS)
async def get_messages(req: Request) -> Response:
    return await routes.get_messages(req)


@app.route(route="sessions", methods=["POST"], auth_level=SESSIONS)
async def create_session(req: Request) -> Response:
    return await routes.create_session(req)


@app.route(route="sessions", methods=["GET"], auth_level=SESSIONS)
async def list_sessions(req: Request) -> Response:
    return await routes.list_sessions(req)


@app.route(route="sessions/{session_id}", methods=["GET"], auth_level=SESSIONS)
async def get_session(req: Request) -> Response:
    return await routes.get_session(req)


@app.route(route="sessions/{session_id}", methods=["DELETE"], auth_level=SESSIONS)
async def delete_session(req: Request) -> Response:
    return await routes.delete_session(req)


@app.route(route="me", methods=["GET"], auth_level=SESSIONS)
async def me(req: Request) -> Response:
    return await routes.me(req)


@app.route(route="ui", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)  # the page holds no data
async def chat_page(req: Request) -> Response:
    return await routes.chat_page(req)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: Request) -> Response:
    return await routes.health(req)


# The OpenAI Responses API over the same sessions (docs/responses.md); its module loads on its first request.
def responses() -> ModuleType:
    from stateful_agent.http.responses_api import routes as handlers

    return handlers


@app.route(route="v1/responses", methods=["POST"], auth_level=SESSIONS)
async def create_response(req: Request) -> Response:
    return await responses().create_response(req)


@app.route(route="v1/responses/{response_id}", methods=["GET"], auth_level=SESSIONS)
async def get_response(req: Request) -> Response:
    return await responses().get_response(req)


@app.route(route="v1/responses/{response_id}/input_items", methods=["GET"], auth_level=SESSIONS)
async def list_input_items(req: Request) -> Response:
    return await responses().list_input_items(req)


@app.route(route="v1/responses/{response_id}", methods=["DELETE"], auth_level=SESSIONS)
async def delete_response(req: Request) -> Response:
    return await responses().delete_response(req)


@app.route(route="v1/conversations", methods=["POST"], auth_level=SESSIONS)
async def create_conversation(req: Request) -> Response:
    return await responses().create_conversation(req)


@app.route(route="v1/conversations/{conversation_id}", methods=["GET"], auth_level=SESSIONS)
async def get_conversation(req: Request) -> Response:
    return await responses().get_conversation(req)


@app.route(route="v1/conversations/{conversation_id}", methods=["POST"], auth_level=SESSIONS)
async def update_conversation(req: Request) -> Response:
    return await responses().update_conversation(req)


@app.route(route="v1/conversations/{conversation_id}", methods=["DELETE"], auth_level=SESSIONS)
async def delete_conversation(req: Request) -> Response:
    return await responses().delete_conversation(req)


@app.route(route="v1/conversations/{conversation_id}/items", methods=["GET"], auth_level=SESSIONS)
async def list_conversation_items(req: Request) -> Response:
    return await responses().list_items(req)


@app.route(route="v1/conversations/{conversation_id}/items", methods=["POST"], auth_level=SESSIONS)
async def add_conversation_items(req: Request) -> Response:
    return await responses().add_items(req)


@app.route(route="v1/conversations/{conversation_id}/items/{item_id}", methods=["GET"], auth_level=SESSIONS)
async def get_conversation_item(req: Request) -> Response:
    return await responses().get_item(req)


# The agent as an MCP server: one tool, ask (docs/agents.md); its module loads on its first request.
@app.route(route="mcp", methods=["POST"], auth_level=SESSIONS)
async def mcp(req: Request) -> Response:
    from stateful_agent.http import mcp_endpoint

    return await mcp_endpoint.mcp(req)


# The agent over A2A (docs/agents.md): its public card, and JSON-RPC; the module loads on its first request.
@app.route(route=".well-known/agent-card.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def agent_card(req: Request) -> Response:
    from stateful_agent.http import a2a_endpoint

    return await a2a_endpoint.card(req)


@app.route(route="a2a", methods=["POST"], auth_level=SESSIONS)
async def a2a(req: Request) -> Response:
    from stateful_agent.http import a2a_endpoint

    return await a2a_endpoint.a2a(req)
