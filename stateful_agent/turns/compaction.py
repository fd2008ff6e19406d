"""The live window: which stored messages the next prompt holds, decided by MAF's compaction.

MAF's strategies only mark messages as excluded; they never shrink the stored
session. So before each turn we run the configured strategy on a copy of the
history plus the new message, and the excluded prefix (whole message groups,
so a tool call never leaves without its result) moves out of the snapshot into
the transcript. The prompt and the snapshot both stay bounded.

Strategies (``COMPACTION_STRATEGY``), both MAF's ``TruncationStrategy``:

- ``messages``: at most ``COMPACTION_MAX_MESSAGES`` messages reach the model;
  when exceeded, the oldest groups are archived down to half of it.
- ``tokens``: at most ``COMPACTION_TOKEN_BUDGET`` tokens (MAF's 4-characters-per-token
  estimate); when exceeded, the oldest groups are archived down to half of it.
- ``none``: keep everything (only ``MAX_SNAPSHOT_BYTES`` guards the size).

Archiving down to half makes each transcript chunk about half a window, not one per turn.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from agent_framework import (
    CharacterEstimatorTokenizer,
    CompactionStrategy,
    Message,
    TruncationStrategy,
    apply_compaction,
    included_messages,
)
from agent_framework._compaction import group_messages  # MAF's message grouping; not re-exported

from ..platform.settings import Settings


def build_strategy(settings: Settings) -> CompactionStrategy | None:
    """The MAF strategy the settings choose, or ``None`` for ``none``."""
    if settings.compaction_strategy == "messages":
        limit = settings.compaction_max_messages
        return TruncationStrategy(max_n=limit, compact_to=max(1, limit // 2))
    if settings.compaction_strategy == "tokens":
        budget = settings.compaction_token_budget
        return TruncationStrategy(max_n=budget, compact_to=max(1, budget // 2), tokenizer=CharacterEstimatorTokenizer())
    return None


async def archivable_prefix(
    history: Sequence[Message], incoming: Message, strategy: CompactionStrategy | None, *, max_messages: int
) -> int:
    """How many of the oldest ``history`` messages leave the live window before this turn."""
    if strategy is None or not history:
        return 0
    if isinstance(strategy, TruncationStrategy) and strategy.tokenizer is None and len(history) < max_messages:
        return 0  # cheap exit: under the message limit nothing can be excluded
    probe = [_probe_copy(message) for message in [*history, incoming]]
    await apply_compaction(probe, strategy=strategy)
    kept = {id(message) for message in included_messages(probe)}
    cut = next((i for i, message in enumerate(probe) if id(message) in kept), len(probe))
    return _align_to_groups(probe, min(cut, len(history)))


def _probe_copy(message: Message) -> Message:
    """A copy that compaction may annotate, leaving ``message`` as it is: MAF's compaction writes its
    annotations into ``additional_properties`` and sets missing ``message_id``s, nothing else."""
    probe = copy.copy(message)
    probe.additional_properties = copy.deepcopy(message.additional_properties)
    return probe


def _align_to_groups(messages: list[Message], cut: int) -> int:
    """Move ``cut`` back so that no message group straddles it."""
    extent: dict[str, tuple[int, int]] = {}
    for span in group_messages(messages):
        first, last = extent.get(span["group_id"], (span["start_index"], span["end_index"]))
        extent[span["group_id"]] = (min(first, span["start_index"]), max(last, span["end_index"]))
    moved = True
    while moved:
        moved = False
        for first, last in extent.values():
            if first < cut <= last:
                cut, moved = first, True
    return cut
