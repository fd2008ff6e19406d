"""The HTTP front door: routes, request parsing, problem documents, Server-Sent Events, the chat page."""
