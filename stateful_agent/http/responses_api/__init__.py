"""The OpenAI Responses API, a second front door over the same turn pipeline and sessions.

``routes`` (handlers), ``requests`` (the request bodies this door accepts, and its ids), ``shapes`` (responses,
output and conversation items in OpenAI's shapes), ``stream`` (a turn's events as Responses stream events) and
``errors`` (OpenAI's error object). A conversation is a session: its id is the session id.
"""
