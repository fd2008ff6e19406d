"""Settings are validated with clear errors; the sample lists every one; the model factory picks right."""

from __future__ import annotations

import json
import logging

import pytest
from agent_framework import Message

from stateful_agent.errors import ConfigurationError
from stateful_agent.platform.models import EchoChatClient, build_chat_client
from stateful_agent.platform.settings import SETTINGS, load_settings
from testkit.servers import fake_openai
from tests.conftest import ROOT

HOST_SETTINGS = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsStorage", "PYTHON_ENABLE_INIT_INDEXING"}


def test_defaults_need_no_configuration():
    settings = load_settings({})
    assert settings.backend == "file"
    assert str(settings.session_dir) == ".sessions"
    assert settings.model_provider == "echo"
    assert settings.max_message_bytes == 32 * 1024
    assert settings.max_snapshot_bytes == 1_572_864
    assert settings.session_ttl_seconds is None
    assert (settings.cosmos_database, settings.cosmos_container) == ("agents", "conversations")
    assert (settings.auth_mode, settings.easyauth_enabled, settings.in_azure) == ("none", False, False)
    assert settings.chat_ui is True


def test_the_sample_settings_file_lists_every_setting_and_loads():
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    assert set(values) == set(SETTINGS) | HOST_SETTINGS
    assert values["PYTHON_ENABLE_INIT_INDEXING"] == "1"
    assert load_settings(values).backend == "file"


def test_the_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    assert [name for name in SETTINGS if f"`{name}`" not in readme] == []


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MAF_SESSION_BACKEND": "redis"}, "MAF_SESSION_BACKEND='redis' is not one of"),
        ({"MAF_SESSION_BACKEND": "postgres", "POSTGRES_DSN": "host=a b=c=d"}, "POSTGRES_DSN is not a libpq"),
        ({"MAF_SESSION_BACKEND": "postgres", "POSTGRES_POOL_SIZE": "0"}, "POSTGRES_POOL_SIZE"),
        ({"MAF_SESSION_BACKEND": "cosmos"}, "COSMOS_ENDPOINT is required"),
        ({"COSMOS_ENDPOINT": "account.documents.azure.com"}, "COSMOS_ENDPOINT must be an http(s) URL"),
        ({"SESSION_TTL_SECONDS": "0"}, "SESSION_TTL_SECONDS must be -1"),
        ({"SESSION_TTL_SECONDS": "soon"}, "is not an integer"),
        ({"MAX_MESSAGE_BYTES": "0"}, "MAX_MESSAGE_BYTES=0 must be >= 1"),
        ({"MAX_SNAPSHOT_BYTES": "3000000"}, "between 1024 and 2097152"),
        ({"COSMOS_CREATE_CONTAINER": "maybe"}, "must be true or false"),
        ({"CHAT_UI": "off"}, "CHAT_UI='off' must be true or false"),
        ({"MODEL_PROVIDER": "llama"}, "MODEL_PROVIDER='llama' is not one of"),
        ({"MODEL_PROVIDER": "azure_openai"}, "AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_MODEL must be set"),
        ({"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com/"}, "AZURE_OPENAI_MODEL must be set"),
        ({"MODEL_PROVIDER": "openai"}, "OPENAI_MODEL must be set"),
        ({"OPENAI_MODEL": "gpt-4o-mini"}, "needs OPENAI_API_KEY"),
    ],
)
def test_bad_settings_name_the_culprit(environ, message):
    with pytest.raises(ConfigurationError) as raised:
        load_settings(environ)
    assert message in raised.value.detail


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("0", False), ("TRUE", True), (" ", True)])
def test_the_chat_page_is_on_unless_turned_off(value, expected):
    assert load_settings({"CHAT_UI": value}).chat_ui is expected


def test_ttl_minus_one_means_keep_forever_and_blank_means_unset():
    assert load_settings({"SESSION_TTL_SECONDS": "-1"}).session_ttl_seconds is None
    assert load_settings({"SESSION_TTL_SECONDS": "86400"}).session_ttl_seconds == 86400
    assert load_settings({"MAF_SESSION_BACKEND": " ", "MAF_SESSION_DIR": ""}).backend == "file"


def test_provider_is_inferred_from_the_model_settings():
    azure = load_settings({"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com/", "AZURE_OPENAI_MODEL": "chat"})
    assert (azure.model_provider, azure.model_label) == ("azure_openai", "azure_openai:chat")
    local = load_settings({"OPENAI_MODEL": "llama3.2", "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"})
    assert (local.model_provider, local.model_label) == ("openai", "openai:llama3.2")


def test_echo_is_the_default_model_and_says_so_loudly(caplog):
    with caplog.at_level(logging.WARNING):
        client = build_chat_client(load_settings({}))
    assert isinstance(client, EchoChatClient)
    assert "offline 'echo' model" in caplog.text


async def test_azure_openai_uses_the_chat_completions_client_with_entra_id_when_no_key(monkeypatch):
    import azure.identity.aio
    from agent_framework.openai import OpenAIChatCompletionClient
    from azure.core.credentials import AccessToken
    from azure.core.credentials_async import AsyncTokenCredential

    created = []

    class RecordingCredential(AsyncTokenCredential):
        """Stands in for DefaultAzureCredential: records how it was built and the scopes it is asked for."""

        def __init__(self, **kwargs):
            self.kwargs, self.scopes = kwargs, []
            created.append(self)

        async def get_token(self, *scopes, **kwargs):
            self.scopes.extend(scopes)
            return AccessToken("entra-token", 4102444800)

        async def close(self):
            pass

    monkeypatch.setattr(azure.identity.aio, "DefaultAzureCredential", RecordingCredential)
    seen: list[bytes] = []
    with fake_openai(reply="hi", seen=seen) as endpoint:
        settings = load_settings(
            {
                "AZURE_OPENAI_ENDPOINT": endpoint + "/",
                "AZURE_OPENAI_MODEL": "chat-deployment",
                "AZURE_CLIENT_ID": "identity-client-id",
                "MODEL_TIMEOUT_SECONDS": "42",
                "MODEL_MAX_RETRIES": "3",
            }
        )
        client = build_chat_client(settings)
        assert isinstance(client, OpenAIChatCompletionClient)
        assert client.model == "chat-deployment"
        assert [c.kwargs for c in created] == [{"managed_identity_client_id": "identity-client-id"}]
        assert (client.client.timeout, client.client.max_retries) == (42, 3)
        response = await client.get_response([Message(role="user", contents=["hello"])])
    assert response.text == "hi"
    (request,) = seen
    assert request.startswith(b"POST /openai/deployments/chat-deployment/chat/completions")
    assert b"authorization: bearer entra-token" in request.lower()
    assert created[0].scopes == ["https://cognitiveservices.azure.com/.default"]


def test_openai_compatible_endpoint_needs_no_key():
    from agent_framework.openai import OpenAIChatCompletionClient

    settings = load_settings({"OPENAI_MODEL": "llama3.2", "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"})
    client = build_chat_client(settings)
    assert isinstance(client, OpenAIChatCompletionClient)
    assert client.service_url().startswith("http://127.0.0.1:11434/v1")


async def test_echo_replies_from_the_conversation_it_is_sent():
    client = EchoChatClient()
    conversation = [
        Message(role="user", contents=["first"]),
        Message(role="assistant", contents=["ok"]),
        Message(role="user", contents=["second"]),
    ]
    response = await client.get_response(conversation)
    assert response.text == (
        '[echo, offline] You said: "second". I see 2 earlier message(s). Your first message was: "first".'
    )
    streamed = [update.text async for update in client.get_response(conversation, stream=True)]
    assert len(streamed) > 1
    assert "".join(streamed) == response.text


def test_the_settings_reference_is_generated_from_the_declarations():
    from stateful_agent.platform.settings import DECLARATIONS, reference

    page = (ROOT / "docs" / "settings.md").read_text()
    assert reference() in page  # regenerate with: python -m stateful_agent settings
    assert [line.split("`")[1] for line in reference().splitlines()[2:]] == [d.name for d in DECLARATIONS]
