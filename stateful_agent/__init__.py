"""A stateful Microsoft Agent Framework agent served by Azure Functions.

Each HTTP turn loads the conversation's ``AgentSession`` snapshot from a store, runs one agent turn and
writes the new snapshot back conditionally. Start at ``function_app.py`` (routes), then ``http/routes.py``
(the HTTP front door) and ``turns/service.py`` (the turn pipeline); ``docs/architecture.md`` maps the rest.
"""
