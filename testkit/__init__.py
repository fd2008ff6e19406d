"""Test support, one home for ``tests/`` and ``bench/``: local servers (``servers``: the Cosmos DB protocol
server, PostgreSQL, a zero-latency Chat Completions endpoint), a Chat Completions server that streams as
OpenAI and Azure OpenAI do (``openai_server``), and the scripted model on MAF's base classes with the
service builders (``support``). Not deployed (``.funcignore``)."""
