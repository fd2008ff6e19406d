"""What only the PostgreSQL store has: statements per turn, its schema, expiry without a native TTL, a
server restart, lost answers, Entra sign-in and its configuration. The shared behaviour (MAF's contract,
races, idempotency, compaction, corruption, cold starts) runs on it through ``BACKENDS`` like every store."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from stateful_agent import runtime
from stateful_agent.devhost import build_app
from stateful_agent.errors import ConfigurationError, SessionCorruptError, StoreUnavailableError
from stateful_agent.platform.agent import build_agent
from stateful_agent.platform.settings import ConfigurationError as SettingsError
from stateful_agent.platform.settings import load_settings
from stateful_agent.stores import create_store
from stateful_agent.stores.postgres import PostgresSnapshotStore
from stateful_agent.stores.postgres_cli import main
from stateful_agent.stores.postgres_schema import SCHEMA_VERSION
from stateful_agent.turns.service import TurnService
from testkit.servers import local_postgres
from testkit.support import ScriptedChatClient, read_raw, settings_for

pytestmark = pytest.mark.postgres

TURN = "/api/sessions/s1/turns"


async def sql(dsn: str, query: str, params: Any = None) -> list[tuple]:
    """Run one statement on its own connection (as an operator would in psql)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as connection:
        cursor = await connection.execute(query, params)
        return await cursor.fetchall() if cursor.description else []


async def command(argv: list[str], dsn: str) -> int:
    """``python -m stateful_agent.stores.postgres <argv>`` (in a thread: it runs its own event loop)."""
    return await asyncio.to_thread(main, argv, store_factory=lambda: PostgresSnapshotStore(dsn))


def service_on(dsn: str, store: PostgresSnapshotStore | None = None, **settings: Any) -> TurnService:
    config = settings_for("memory", **settings)
    config = replace(config, backend="postgres", postgres_dsn=dsn, postgres_create_schema=True)
    store = store or create_store(config)
    return TurnService(config, store, lambda: build_agent(config, ScriptedChatClient()))


async def statements(dsn: str) -> list[tuple[str, int]]:
    """The statements run in ``dsn``'s database since the last reset, with their call counts."""
    rows = await sql(
        dsn,
        "SELECT query, calls FROM pg_stat_statements WHERE dbid = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) AND query NOT LIKE '%pg_stat_statements%'",
    )
    return sorted((query.split()[0].upper(), calls) for query, calls in rows)


# -- cost ------------------------------------------------------------------------------------------------------


async def test_a_turn_is_one_point_read_and_one_conditional_write(make_service):
    service = make_service("postgres", compaction_max_messages=6)
    dsn = service.settings.postgres_dsn
    await sql(dsn, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    await service.store.ping()  # the schema is created (or checked) once per process, before any turn

    await sql(dsn, "SELECT pg_stat_statements_reset()")
    await service.run_turn("s1", "new session")
    assert await statements(dsn) == [("INSERT", 1), ("SELECT", 1)]

    for i in range(2):
        await sql(dsn, "SELECT pg_stat_statements_reset()")
        await service.run_turn("s1", f"existing session {i}")
        assert await statements(dsn) == [("SELECT", 1), ("UPDATE", 1)]

    await sql(dsn, "SELECT pg_stat_statements_reset()")
    await service.run_turn("s1", "this turn archives")  # 6 messages in the window: the oldest are archived
    assert await statements(dsn) == [("INSERT", 1), ("SELECT", 1), ("UPDATE", 1)]  # + one chunk


async def test_the_pool_is_created_once_and_reused(make_service):
    service = make_service("postgres")
    await service.run_turn("s1", "one")
    pool = service.store.pool
    await service.run_turn("s1", "two")
    await service.describe("s1")
    assert pool is not None
    assert service.store.pool is pool


# -- schema ----------------------------------------------------------------------------------------------------


async def test_without_a_schema_the_app_says_how_to_create_it_and_migrate_does(postgres, capsys):
    dsn = postgres.create_database()
    service = service_on(dsn)
    service.store.create_schema = False
    with pytest.raises(ConfigurationError, match=r"stateful_agent\.stores\.postgres migrate"):
        await service.run_turn("s1", "hello")

    assert await command(["migrate"], dsn) == 0
    assert capsys.readouterr().out.strip() == f"schema version 0 -> {SCHEMA_VERSION}"
    assert await command(["migrate"], dsn) == 0  # again: nothing to do
    assert capsys.readouterr().out.strip() == f"schema version {SCHEMA_VERSION}"

    assert (await service.run_turn("s1", "hello")).turn == 1
    await service.store.close()


async def test_instances_starting_together_migrate_once(postgres):
    dsn = postgres.create_database()
    stores = [PostgresSnapshotStore(dsn, create_schema=True) for _ in range(5)]
    results = await asyncio.gather(*(store.migrate() for store in stores))
    assert sorted(results) == [(0, SCHEMA_VERSION)] + [(SCHEMA_VERSION, SCHEMA_VERSION)] * 4
    for store in stores:
        await store.close()


async def test_a_schema_newer_than_the_app_is_refused(postgres):
    dsn = postgres.create_database()
    store = PostgresSnapshotStore(dsn, create_schema=True)
    await store.migrate()
    await sql(dsn, "UPDATE stateful_agent_schema SET version = version + 1")
    checking = PostgresSnapshotStore(dsn)
    with pytest.raises(ConfigurationError, match="newer than this app"):
        await checking.read("s1")
    for each in (store, checking):
        await each.close()


# -- expiry ----------------------------------------------------------------------------------------------------


async def test_an_expired_session_reads_as_absent_starts_over_and_cleanup_removes_it(make_service):
    service = make_service("postgres", session_ttl_seconds=3600, compaction_max_messages=4)
    dsn = service.settings.postgres_dsn
    for i in range(3):
        await service.run_turn("s1", f"m{i}")
    await service.run_turn("s2", "still alive")
    assert (await sql(dsn, "SELECT count(*) FROM stateful_agent_transcripts"))[0][0] >= 1
    expiry = await sql(dsn, "SELECT expires_at - now() FROM stateful_agent_sessions WHERE session_id = 's1'")
    assert 3590 < expiry[0][0].total_seconds() <= 3600

    await sql(dsn, "UPDATE stateful_agent_sessions SET expires_at = now() - interval '1 s' WHERE session_id = 's1'")
    await sql(dsn, "UPDATE stateful_agent_transcripts SET expires_at = now() - interval '1 s'")
    assert await service.store.read("s1") is None
    assert [row.session_id for row in await service.store.list_sessions("", limit=10)] == ["s2"]
    assert (await service.run_turn("s1", "a new start")).turn == 1  # the expired row is replaced

    await sql(dsn, "UPDATE stateful_agent_sessions SET expires_at = now() - interval '1 s' WHERE session_id = 's2'")
    assert await service.store.cleanup() == (1, 1)  # the archived chunk and the expired s2
    assert await sql(dsn, "SELECT session_id FROM stateful_agent_sessions") == [("s1",)]


async def test_the_cleanup_command_reports_what_it_removed(make_service, capsys):
    service = make_service("postgres", session_ttl_seconds=60)
    await service.run_turn("s1", "hello")
    dsn = service.settings.postgres_dsn
    await sql(dsn, "UPDATE stateful_agent_sessions SET expires_at = now() - interval '1 s'")
    assert await command(["cleanup"], dsn) == 0
    assert capsys.readouterr().out.strip() == "deleted 1 expired session(s) and 0 transcript chunk(s)"


# -- faults ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_server():
    """A server of this module's own, which its tests may stop and start."""
    with local_postgres() as server:
        yield server


async def test_a_server_restart_mid_run_is_503_while_down_and_loses_nothing(own_server):
    dsn = own_server.create_database()
    service = service_on(dsn, PostgresSnapshotStore(dsn, create_schema=True, timeout_seconds=1))
    await runtime.install(service)
    try:
        await _restart_mid_run(own_server)
    finally:
        await runtime.install(None)  # closes the pool, which would otherwise keep reconnecting


async def _restart_mid_run(own_server) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app()), base_url="http://t") as client:
        for i in range(3):
            assert (await client.post(TURN, json={"message": f"before {i}"})).status_code == 200

        own_server.stop()
        try:
            down = await client.post(TURN, json={"message": "while down"})
            assert down.status_code == 503
            assert down.json()["code"] == "store_unavailable"
            assert int(down.headers["retry-after"]) >= 1
            assert (await client.get("/api/health")).status_code == 503
            await asyncio.sleep(6)  # a longer outage: psycopg's reconnection back-off would reach 8 s
        finally:
            own_server.start()

        after = await client.post(TURN, json={"message": "after"})
        assert after.status_code == 200, after.text
        assert after.json()["turn"] == 4

        own_server.stop()  # a restart between two requests: the pooled connection is dead, and nobody knows
        own_server.start()
        again = await client.post(TURN, json={"message": "after a quiet restart"})  # retried on a new one
        assert again.status_code == 200, again.text
        texts = [m["text"] for m in (await client.get("/api/sessions/s1")).json()["messages"]]
    assert texts[::2] == ["before 0", "before 1", "before 2", "after", "after a quiet restart"]


class LosesAnswers(psycopg.AsyncConnection):
    """A connection whose next write runs on the server, but whose answer is lost on the way back."""

    writes_to_lose = 0
    lost = 0

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        cursor = await super().execute(query, params, **kwargs)
        text = str(query).lstrip().upper()
        if LosesAnswers.writes_to_lose and text.startswith(("INSERT", "UPDATE")):
            LosesAnswers.writes_to_lose -= 1
            LosesAnswers.lost += 1
            await self.close()  # the connection drops after the server committed
            raise psycopg.OperationalError("the connection was lost (injected)")
        return cursor


@pytest.mark.parametrize(
    "turns", [0, 1, 2], ids=["create-new-session", "replace-existing-session", "transcript-chunk-of-archiving-turn"]
)
async def test_a_write_whose_answer_was_lost_is_recognised_as_ours(make_service, turns):
    dsn = make_service("postgres").settings.postgres_dsn
    pool = AsyncConnectionPool(dsn, connection_class=LosesAnswers, kwargs={"autocommit": True}, open=False)
    await pool.open()
    try:
        service = service_on(dsn, PostgresSnapshotStore(pool=pool, create_schema=True), compaction_max_messages=4)
        await service.store.ping()  # the schema is in place: the next write is the turn's
        for i in range(turns):
            await service.run_turn("s1", f"m{i}")
        LosesAnswers.writes_to_lose, LosesAnswers.lost = 1, 0

        result = await service.run_turn("s1", "the turn")  # no Idempotency-Key: only the write id can tell

        assert LosesAnswers.lost == 1
        assert result.turn == turns + 1
        page = await service.messages("s1", cursor=None, limit=50)
        assert [m["text"] for m in page["messages"]][-2:] == ["the turn", result.reply]
        assert len(page["messages"]) == 2 * (turns + 1)  # stored exactly once
    finally:
        LosesAnswers.writes_to_lose = 0
        await pool.close()


async def test_a_row_that_is_not_a_document_is_corrupt_never_an_outage_and_never_overwritten(make_service):
    model = ScriptedChatClient()
    service = make_service("postgres", model)
    await service.run_turn("s1", "hello")
    dsn = service.settings.postgres_dsn
    for broken in ("[]", '"text"', "null", '{"session_id": "s1"}'):
        await sql(dsn, "UPDATE stateful_agent_sessions SET document = %s::json", (broken,))
        with pytest.raises(SessionCorruptError):
            await service.run_turn("s1", "again")
        assert (await sql(dsn, "SELECT document::text FROM stateful_agent_sessions"))[0][0] == broken
    assert len(model.requests) == 1


async def test_any_text_a_conversation_holds_is_stored_exactly(make_service):
    service = make_service("postgres", ScriptedChatClient(["nul \x00 and \ud800 and 🙂"]))
    await service.run_turn("s1", "a\x00b \u2028 \x1b[31m 日本")
    texts = [m["text"] for m in (await service.describe("s1"))["messages"]]
    assert texts == ["a\x00b \u2028 \x1b[31m 日本", "nul \x00 and \ud800 and 🙂"]


@pytest.mark.parametrize("session_id", ["nul\x00inside", "lone\ud800", "é" * 513])
async def test_ids_postgres_cannot_hold_are_refused_as_value_errors(make_service, session_id):
    store = make_service("postgres").store
    with pytest.raises(ValueError, match="session_id"):
        await store.get(session_id)


# -- sign-in and configuration -------------------------------------------------------------------------------


class TokenCredential:
    """An async Azure token credential that hands out a fixed token and counts its calls."""

    def __init__(self, token: str) -> None:
        self.token, self.calls, self.closed = token, 0, False

    async def get_token(self, *scopes: str, **kwargs: Any) -> SimpleNamespace:
        assert scopes == ("https://ossrdbms-aad.database.windows.net/.default",)
        self.calls += 1
        return SimpleNamespace(token=self.token, expires_on=0)

    async def close(self) -> None:
        self.closed = True


async def test_with_a_credential_each_new_connection_signs_in_with_a_token():
    with local_postgres(password="superuser-secret") as server:
        await sql(server.dsn(), "CREATE ROLE app_identity LOGIN PASSWORD 'token-1'")
        await sql(server.dsn(), "CREATE DATABASE agents OWNER app_identity")
        dsn = f"host=127.0.0.1 port={server.port} dbname=agents user=app_identity"  # no password
        credential = TokenCredential("token-1")
        store = PostgresSnapshotStore(dsn, credential=credential, create_schema=True, pool_size=3)
        service = service_on(dsn, store)
        assert (await service.run_turn("s1", "hello")).turn == 1
        assert credential.calls >= 1
        calls = credential.calls
        await asyncio.gather(*(store.read("s1") for _ in range(20)))  # more connections, each with a token
        assert credential.calls > calls
        await store.close()
        assert not credential.closed  # an injected credential stays open, like an injected pool

        refused = PostgresSnapshotStore(dsn, credential=TokenCredential("wrong"), timeout_seconds=1)
        with pytest.raises(StoreUnavailableError):
            await refused.read("s1")
        await refused.close()


@pytest.mark.parametrize(
    ("conninfo", "environ", "entra"),
    [
        ("host=srv.postgres.database.azure.com dbname=agents user=id-app sslmode=require", {}, True),
        ("postgresql://id-app@srv.postgres.database.azure.com/agents", {}, True),
        ("", {"PGHOST": "srv.postgres.database.usgovcloudapi.net"}, True),
        ("host=srv.postgres.database.azure.com user=u password=p", {}, False),
        ("host=srv.postgres.database.azure.com user=u", {"PGPASSWORD": "p"}, False),
        ("host=db.internal user=u", {}, False),
        ("", {}, False),
    ],
)
def test_entra_sign_in_is_used_only_without_a_password_on_azure(monkeypatch, conninfo, environ, entra):
    for name in ("PGHOST", "PGPASSWORD", "PGPASSFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert PostgresSnapshotStore(conninfo).uses_entra is entra


def test_the_connection_string_never_shows_in_settings_or_errors():
    secret = "host=db user=u password=hunter2"
    settings = load_settings({"MAF_SESSION_BACKEND": "postgres", "POSTGRES_DSN": secret})
    assert settings.postgres_dsn == secret
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in repr(create_store(settings).__dict__)
    with pytest.raises(SettingsError) as raised:
        load_settings({"MAF_SESSION_BACKEND": "postgres", "POSTGRES_DSN": "password=hunter2 nonsense"})
    assert "hunter2" not in str(raised.value)


async def test_a_read_only_role_is_a_configuration_error_not_an_outage(make_service):
    service = make_service("postgres")
    await service.run_turn("s1", "hello")
    dsn = service.settings.postgres_dsn
    role = f"reader_{uuid.uuid4().hex[:8]}"  # roles belong to the whole server
    await sql(dsn, f"CREATE ROLE {role} LOGIN")
    await sql(dsn, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    reader = service_on(dsn.replace("user=postgres", f"user={role}"))
    reader.store.create_schema = False
    assert (await reader.describe("s1"))["turns"] == 1
    with pytest.raises(ConfigurationError, match="role"):
        await reader.run_turn("s1", "write")
    await reader.store.close()
    body, _ = await read_raw(service.store, "s1")
    assert json.loads(json.dumps(body))["turns"] == 1


async def test_the_printed_grants_are_all_an_app_role_needs(make_service, capsys):
    service = make_service("postgres", compaction_max_messages=4)
    await service.run_turn("s0", "created by the administrator's schema")
    dsn = service.settings.postgres_dsn
    role = f"id-app-{uuid.uuid4().hex[:8]}"  # a managed identity's name: quoted in SQL
    await sql(dsn, f'CREATE ROLE "{role}" LOGIN')
    assert await asyncio.to_thread(main, ["grants", role]) == 0
    for statement in capsys.readouterr().out.strip().splitlines():
        await sql(dsn, statement)

    app = service_on(dsn.replace("user=postgres", f"user={role}"), session_ttl_seconds=60, compaction_max_messages=4)
    app.store.create_schema = False
    for i in range(4):  # creates, replaces, archives
        await app.run_turn("s1", f"m{i}")
    assert len((await app.messages("s1", cursor=None, limit=50))["messages"]) == 8
    assert [row.session_id for row in await app.store.list_sessions("", limit=5)] == ["s1", "s0"]
    await app.delete("s0")
    assert await app.store.cleanup() == (0, 0)
    await app.store.close()
