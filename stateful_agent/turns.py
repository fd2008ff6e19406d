"""The turn pipeline: load the snapshot, run one agent turn, write it back conditionally.

Nothing is written unless the turn completed; a write that loses a race raises
``SessionConflictError`` and the stored session stays exactly the winner's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent_framework import Agent, AgentSession

from . import snapshots
from .errors import ConfigurationError, ModelError, SessionNotFoundError
from .settings import Settings
from .stores import SnapshotStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TurnResult:
    """What a completed turn returns to the client."""

    session_id: str
    turn: int
    reply: str

    def as_json(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "turn": self.turn, "reply": self.reply}


class TurnService:
    """Runs turns and reads sessions; one instance per process, shared by all requests."""

    def __init__(self, settings: Settings, store: SnapshotStore, agent_factory: Callable[[], Agent]) -> None:
        self.settings = settings
        self.store = store
        self._agent_factory = agent_factory
        self._agent: Agent | None = None

    @property
    def agent(self) -> Agent:
        """The agent, built on the first turn (so health checks never load the model SDK)."""
        if self._agent is None:
            self._agent = self._agent_factory()
        return self._agent

    async def run_turn(self, session_id: str, message: str) -> TurnResult:
        """Run one turn of ``session_id`` (created on its first turn) and store it."""
        started = time.perf_counter()
        record = await self.store.read(session_id)
        session = snapshots.restore(record.document, session_id) if record else AgentSession(session_id=session_id)
        known = len(snapshots.history(session))

        try:
            response = await self.agent.run(message, session=session)
        except Exception as exc:  # any model, network or tool failure: nothing is stored
            logger.error("Model call failed for session %r: %s", session_id, exc, exc_info=True)
            raise ModelError("The model call failed; the session was not changed. Retry the turn.") from exc

        if len(snapshots.history(session)) < known + 2:
            raise ConfigurationError("The agent did not record the turn in the session (history provider missing).")

        turn = (record.document["turns"] if record else 0) + 1
        document = snapshots.build_document(
            session_id,
            session,
            previous=record.document if record else None,
            turns=turn,
            ttl_seconds=self.settings.session_ttl_seconds,
            max_bytes=self.settings.max_snapshot_bytes,
        )
        if record is None:
            await self.store.create(session_id, document)
        else:
            await self.store.replace(session_id, document, record.etag)
        logger.info("Stored turn %d of session %r in %.0f ms", turn, session_id, (time.perf_counter() - started) * 1000)
        return TurnResult(session_id=session_id, turn=turn, reply=response.text)

    async def describe(self, session_id: str) -> dict[str, Any]:
        """The session's summary and its user/assistant messages."""
        record = await self.store.read(session_id)
        if record is None:
            raise SessionNotFoundError(f"No session with id '{session_id}'.")
        session = snapshots.restore(record.document, session_id)
        document = record.document
        return {
            "session_id": session_id,
            "turns": document["turns"],
            "created_at": document["created_at"],
            "updated_at": document["updated_at"],
            "messages": [
                {"role": m.role, "text": m.text}
                for m in snapshots.history(session)
                if m.role in ("user", "assistant") and m.text
            ],
        }

    async def delete(self, session_id: str) -> None:
        """Delete the session; deleting a missing one succeeds."""
        await self.store.remove(session_id)

    async def health(self) -> dict[str, str]:
        """Check the store answers; report backend and model."""
        await self.store.ping()
        return {"status": "ok", "backend": self.store.backend, "model": self.settings.model_label}
