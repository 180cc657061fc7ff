"""The hot-recommendation cache of a model server: answers keyed by user, request shape and model
version, valid only while the user's fresh history is unchanged.

An entry is used only if (a) the same model name and version would answer, (b) the user's
history in the state store has the same signature as when the entry was made (any new watch or
rate changes it), and (c) it is younger than ``ttl_s``. A model server's answer depends on
nothing else, so a hit is never staler than the state store itself: the cache saves scoring
but never delays freshness. The store read that (b) needs is the price of that guarantee.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from ray_app.serving.answer import Answer
from ray_app.state.store import HistoryItem

CacheKey = tuple[str, int, tuple[str, ...], str, str]
"""(user, k, sorted exclude, model name, model version)."""
Signature = tuple[int, str, float]
"""(history length, newest item, its time): changes with every new event of the user."""


def history_signature(history: Sequence[HistoryItem]) -> Signature:
    """What a cached answer for this history must match to be used."""
    if not history:
        return (0, "", 0.0)
    newest = history[0]
    return (len(history), newest.item_id, newest.ts)


@dataclass
class _Entry:
    answer: Answer
    signature: Signature
    expires: float


class RecommendationCache:
    """A bounded LRU with a TTL; counts hits and misses. Not thread-safe: one replica's event
    loop uses it."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey, signature: Signature, now: float | None = None) -> Answer | None:
        """The cached answer if it is still valid for ``signature``; counts a hit or a miss."""
        entry = self._entries.get(key)
        t = time.monotonic() if now is None else now
        if entry is None or entry.signature != signature or entry.expires <= t:
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.answer

    def put(
        self, key: CacheKey, signature: Signature, answer: Answer, now: float | None = None
    ) -> None:
        """Keep ``answer`` for ``ttl_s``; the least recently used entry goes past the bound."""
        t = time.monotonic() if now is None else now
        self._entries[key] = _Entry(answer, signature, t + self.ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry (the counts stay)."""
        self._entries.clear()

    def stats(self) -> dict[str, float]:
        """Entries, hits, misses and the hit ratio so far."""
        total = self.hits + self.misses
        return {
            "entries": len(self._entries),
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": self.hits / total if total else 0.0,
        }
