"""Diversity re-ranker: maximal marginal relevance (MMR) over item genres."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from ray_app.registry.signing import SigningConfig
from ray_app.registry.store import Registry, read_item_metadata
from ray_app.serving.config import INTERNAL_DEPLOYMENT, updated_config

log = logging.getLogger("ray.serve")


def mmr(
    items: Sequence[str],
    genres: Mapping[str, Sequence[str]],
    k: int,
    diversity: float,
) -> list[str]:
    """Pick ``k`` of ``items`` (best first) trading relevance for genre diversity.

    Relevance is rank-based (1 at the top, falling linearly) because model scores live on
    different scales per model; similarity is the Jaccard index of two items' genre sets.
    Each step picks ``argmax (1 - diversity) * rel(i) - diversity * max_sim(i, picked)``.
    ``diversity == 0`` or no genre data returns the input order unchanged.
    """
    if diversity <= 0 or not genres or len(items) <= 1:
        return list(items[:k])
    n = len(items)
    rel = {it: 1.0 - r / n for r, it in enumerate(items)}
    sets = {it: frozenset(genres.get(it, ())) for it in items}
    picked: list[str] = []
    left = list(items)
    # max similarity of each remaining item to anything picked so far (updated incrementally)
    max_sim = dict.fromkeys(items, 0.0)
    while left and len(picked) < k:
        best = max(left, key=lambda it: (1 - diversity) * rel[it] - diversity * max_sim[it])
        picked.append(best)
        left.remove(best)
        bs = sets[best]
        for it in left:
            s = sets[it]
            if s and bs:
                sim = len(s & bs) / len(s | bs)
                if sim > max_sim[it]:
                    max_sim[it] = sim
    return picked


class GenreIndex:
    """Item genres as a 0/1 matrix, so MMR's pairwise Jaccard is two small matrix products.

    :meth:`mmr` returns exactly what :func:`mmr` returns (same float operations in the same
    order, same first-index tie-break) at a fraction of the cost; the pure-Python loop was a
    large share of the re-ranker's CPU under load (BENCHMARKS.md).
    """

    def __init__(self, genres: Mapping[str, Sequence[str]]) -> None:
        names = sorted({g for gs in genres.values() for g in gs})
        col = {g: j for j, g in enumerate(names)}
        self.row = {item: i for i, item in enumerate(genres)}
        m = np.zeros((len(self.row) + 1, max(len(names), 1)), dtype=np.int64)  # last row: none
        for item, gs in genres.items():
            m[self.row[item], [col[g] for g in gs]] = 1
        self.matrix = m
        self.size = m.sum(axis=1)

    def __len__(self) -> int:
        return len(self.row)

    def mmr(self, items: Sequence[str], k: int, diversity: float) -> list[str]:
        """:func:`mmr` over this index's genres."""
        n = len(items)
        if diversity <= 0 or not self.row or n <= 1:
            return list(items[:k])
        none = len(self.row)
        rows = np.fromiter((self.row.get(it, none) for it in items), dtype=np.int64, count=n)
        sub = self.matrix[rows]
        inter = sub @ sub.T
        size = self.size[rows]
        union = size[:, None] + size[None, :] - inter
        sim = np.divide(inter, union, out=np.zeros((n, n)), where=union > 0)
        rel = 1.0 - np.arange(n) / n
        max_sim = np.zeros(n)
        alive = np.ones(n, dtype=bool)
        picked: list[str] = []
        for _ in range(min(k, n)):
            score = (1 - diversity) * rel - diversity * max_sim
            score[~alive] = -np.inf
            best = int(np.argmax(score))
            picked.append(items[best])
            alive[best] = False
            np.maximum(max_sim, sim[best], out=max_sim)
        return picked


class ReRankerConfig(BaseModel):
    """The re-ranker's ``user_config``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    diversity: float = Field(default=0.2, ge=0.0, le=1.0)
    """MMR weight: 0 keeps the relevance order, 1 picks for genre variety alone."""


@serve.deployment(**INTERNAL_DEPLOYMENT)
class ReRanker:
    """MMR re-ranking with ``diversity`` from ``user_config``; genres from the registry.

    Genres are read (signature-verified) from the registry's item-metadata file; without one
    the re-ranker passes lists through unchanged.
    """

    def __init__(self, registry: str, signing: SigningConfig) -> None:
        self.registry = Registry(registry, signing)
        self.settings: ReRankerConfig | None = None
        self.index = GenreIndex({})
        self._reload_genres()

    def _reload_genres(self) -> None:
        try:
            self.index = GenreIndex(read_item_metadata(self.registry))
        except Exception:
            # A tampered metadata file must not take the service down: keep the last good one.
            log.exception("item metadata refused; keeping %d known items", len(self.index))
        log.info("re-ranker: genres for %d items", len(self.index))

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a :class:`ReRankerConfig`; also re-reads the item metadata."""
        first = self.settings is None
        self.settings = updated_config(self.settings, ReRankerConfig, user_config, "ReRanker")
        if not first:
            self._reload_genres()

    # async although it never awaits: Serve runs a sync method on a worker thread, and that
    # hand-off cost more than MMR itself when profiled under load (BENCHMARKS.md).
    async def rerank_batch(self, lists: list[list[str]], ks: list[int]) -> list[list[str]]:
        """Top-k of each list after MMR, in one actor call."""
        d = self.settings.diversity if self.settings else ReRankerConfig().diversity
        index = self.index
        return [index.mmr(items, k, d) for items, k in zip(lists, ks, strict=True)]
