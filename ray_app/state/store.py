"""The state-store interface and the in-memory state both implementations agree with.

What is kept:

- per user, the ``max_history`` most recent distinct items they watched or rated, each with
  the time of its latest event (and the latest rating, if any), newest first;
- per item, a trending count with exponential time decay: each new (user, item) pair adds 1,
  which halves every ``trend_half_life_s`` seconds;
- per (topic, partition), the next offset to apply: an event below it was applied already and
  is skipped, so re-delivery after a consumer restart never double-counts.

Decayed counts are stored forward-scaled, ``Σ 2^((t - anchor) / half_life)``: ranking needs no
rescan when time passes, and the anchor moves (every count rescaled once) before the numbers
could overflow.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ray_app.state.config import StateConfig

ActivityKind = Literal["watch", "rate"]

REBASE_AFTER_HALF_LIVES = 512.0
"""Move the trending anchor when a count's scale reaches ``2**512`` (far below float64's max)."""


@dataclass(frozen=True)
class Activity:
    """One watch or rate event, with the Kafka position it came from."""

    user_id: str
    item_id: str
    ts: float
    """Event time, seconds since the epoch."""
    kind: ActivityKind
    topic: str
    partition: int
    offset: int
    rating: float | None = None


@dataclass(frozen=True)
class HistoryItem:
    """An item in a user's recent history."""

    item_id: str
    ts: float
    """Time of the latest event about it."""
    rating: float | None = None


@dataclass(frozen=True)
class AppendResult:
    """What one :meth:`StateStore.append` did."""

    applied: int
    """Events applied (the rest were below their partition's stored offset)."""
    skipped: int


@dataclass(frozen=True)
class StateSize:
    """How much the store holds."""

    users: int
    entries: int
    """History entries over all users."""
    items: int
    """Items with a trending count."""


class StateStore(ABC):
    """Per-user recent history, trending items and per-partition offsets, behind one API."""

    config: StateConfig

    @abstractmethod
    def append(self, events: Sequence[Activity]) -> AppendResult:
        """Apply events in order, atomically with their partitions' next offsets; an event whose
        offset is below its partition's stored next offset is skipped."""

    @abstractmethod
    def histories(self, user_ids: Sequence[str]) -> list[list[HistoryItem]]:
        """Each user's recent history, newest first (empty for a user with no events)."""

    @abstractmethod
    def trending(self, k: int, now: float) -> list[tuple[str, float]]:
        """The ``k`` items with the highest decayed count at time ``now``, with that count."""

    @abstractmethod
    def offsets(self) -> dict[tuple[str, int], int]:
        """Next offset to apply per (topic, partition) seen so far."""

    @abstractmethod
    def size(self) -> StateSize:
        """Users, history entries and trending items held."""

    @abstractmethod
    def clear(self) -> None:
        """Forget everything (a rebuild from offset 0, or a test)."""

    async def histories_async(self, user_ids: Sequence[str]) -> list[list[HistoryItem]]:
        """:meth:`histories` without blocking an event loop."""
        return await asyncio.to_thread(self.histories, user_ids)

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release connections (the state itself stays)."""


@dataclass
class _User:
    items: OrderedDict[str, HistoryItem] = field(default_factory=OrderedDict)


class MemoryState:
    """The whole state in one process's memory: the embedded store's actor holds one of these,
    and it is the reference the Redis store is tested against."""

    def __init__(self, max_history: int, half_life_s: float) -> None:
        self.max_history = max_history
        self.half_life_s = half_life_s
        self._users: dict[str, _User] = {}
        self._trend: dict[str, float] = {}
        self._anchor: float | None = None
        self._next: dict[tuple[str, int], int] = {}
        self._entries = 0

    def _bump(self, item: str, ts: float) -> None:
        if self._anchor is None:
            self._anchor = ts
        exponent = (ts - self._anchor) / self.half_life_s
        if exponent > REBASE_AFTER_HALF_LIVES:
            scale = 2.0 ** (-exponent)
            self._trend = {i: c * scale for i, c in self._trend.items()}
            self._anchor, exponent = ts, 0.0
        self._trend[item] = self._trend.get(item, 0.0) + 2.0**exponent

    def append(self, events: Iterable[Activity]) -> AppendResult:
        """See :meth:`StateStore.append`."""
        applied = skipped = 0
        for e in events:
            tp = (e.topic, e.partition)
            if e.offset < self._next.get(tp, 0):
                skipped += 1
                continue
            self._next[tp] = e.offset + 1
            applied += 1
            user = self._users.setdefault(e.user_id, _User())
            old = user.items.pop(e.item_id, None)
            if old is None:
                self._entries += 1
                self._bump(e.item_id, e.ts)
            # Events may arrive slightly out of order across partitions: keep the newest time.
            ts = max(e.ts, old.ts) if old is not None else e.ts
            rating = e.rating if e.rating is not None else (old.rating if old else None)
            user.items[e.item_id] = HistoryItem(e.item_id, ts, rating)
            while len(user.items) > self.max_history:
                user.items.popitem(last=False)
                self._entries -= 1
        return AppendResult(applied, skipped)

    def histories(self, user_ids: Sequence[str]) -> list[list[HistoryItem]]:
        """See :meth:`StateStore.histories`."""
        out: list[list[HistoryItem]] = []
        for u in user_ids:
            user = self._users.get(u)
            if user is None:
                out.append([])
                continue
            # Newest first; equal times by item id descending, as Redis's ZREVRANGE orders them.
            out.append(sorted(user.items.values(), key=lambda h: (h.ts, h.item_id), reverse=True))
        return out

    def trending(self, k: int, now: float) -> list[tuple[str, float]]:
        """See :meth:`StateStore.trending`."""
        if self._anchor is None or k <= 0:
            return []
        top = sorted(self._trend.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [(i, decayed(c, self._anchor, now, self.half_life_s)) for i, c in top]

    def offsets(self) -> dict[tuple[str, int], int]:
        """See :meth:`StateStore.offsets`."""
        return dict(self._next)

    def size(self) -> StateSize:
        """See :meth:`StateStore.size`."""
        return StateSize(len(self._users), self._entries, len(self._trend))

    def clear(self) -> None:
        """See :meth:`StateStore.clear`."""
        self._users.clear()
        self._trend.clear()
        self._next.clear()
        self._anchor, self._entries = None, 0


def decayed(count: float, anchor: float, now: float, half_life_s: float) -> float:
    """A forward-scaled count's value at ``now``."""
    return count * math.pow(2.0, (anchor - now) / half_life_s)
