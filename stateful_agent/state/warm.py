"""The windows this instance wrote last, kept restored for the sessions' next turns.

Restoring a window (MAF's ``Message.from_dict`` for every message) is the largest part of a turn's own
work. An instance that wrote a session's last version usually serves its next turn too, so it keeps the
``Message`` objects of that window, next to the very dicts it stored for them. A later read reuses them
only when the stored messages are still exactly equal to those dicts (a comparison in C, many times
cheaper than restoring): a write by another instance, an edit, or a corruption of the document makes
the comparison fail and the window is restored from the store as usual. Every other check of the
document runs either way.

The objects are shared by the turns that reuse them, which never change them: MAF copies the history
messages before a run and appends new ones; ``tests/test_warm.py`` checks this after every kind of turn.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent_framework import AgentSession, Message

from .documents import SessionDocument, stored_messages

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Window:
    dicts: list[dict[str, Any]]
    messages: tuple[Message, ...]
    size: int


class WarmWindows:
    """Restored live windows by ``(owner, session_id)``, least recently used out first, within
    ``capacity`` bytes of stored documents (0 turns it off). Safe to share by every turn of a process."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()
        self._size = 0
        self.hits = self.misses = 0

    def restore(self, document: SessionDocument) -> AgentSession:
        """``document.restore()``, reusing the kept window when the stored messages are the ones kept.

        Raises:
            SessionCorruptError: The document does not restore (see ``SessionDocument.restore``).
        """
        key = (document.owner, document.session_id)
        window = self._windows.get(key)
        if window is not None:
            stored = stored_messages(document)
            if stored and stored == window.dicts:
                self._windows.move_to_end(key)
                self.hits += 1
                return document.restore(window.messages)
        self.misses += 1
        return document.restore()

    def keep(self, document: SessionDocument, messages: Sequence[Message], restored: int) -> None:
        """Keep the window of ``document``, which this instance just wrote.

        ``messages`` is the session's history as ``document`` stores it; its first ``restored`` messages
        were restored from the very dicts the document reuses, the others are new and are restored here
        from their stored dicts, so the window kept is exactly what ``restore`` would build.
        """
        key = (document.owner, document.session_id)
        self.forget(document.owner, document.session_id)
        dicts = stored_messages(document)
        if not self.capacity or not dicts or document.size > self.capacity or len(dicts) != len(messages):
            return
        try:
            kept = (*messages[:restored], *(Message.from_dict(item) for item in dicts[restored:]))
        except Exception:  # the write stands; the next turn restores from the store instead
            logger.warning("Could not keep the window of session %r restored", document.session_id, exc_info=True)
            return
        self._windows[key] = _Window(dicts, kept, document.size)
        self._size += document.size
        while self._size > self.capacity:
            _, evicted = self._windows.popitem(last=False)
            self._size -= evicted.size

    def forget(self, owner: str, session_id: str) -> None:
        """Drop the window of ``owner``'s session ``session_id``, if kept."""
        window = self._windows.pop((owner, session_id), None)
        if window is not None:
            self._size -= window.size
