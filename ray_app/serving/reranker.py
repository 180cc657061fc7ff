"""Multi-objective re-ranker: relevance, genre diversity (maximal marginal relevance) and
popularity novelty (a long-tail term that counters the popularity feedback loop)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from ray_app.models.popularity import Popularity
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

    def mmr(
        self,
        items: Sequence[str],
        k: int,
        diversity: float,
        novelty: np.ndarray | None = None,
        novelty_weight: float = 0.0,
    ) -> list[str]:
        """:func:`mmr` over this index's genres; with ``novelty`` (one value in [0, 1] per
        item of ``items``) the relevance part of each score becomes
        ``(1 - novelty_weight) * rel(i) + novelty_weight * novelty[i]``."""
        n = len(items)
        boost = novelty is not None and novelty_weight > 0
        if n <= 1 or ((diversity <= 0 or not self.row) and not boost):
            return list(items[:k])
        rel = 1.0 - np.arange(n) / n
        if boost:
            assert novelty is not None
            rel = (1 - novelty_weight) * rel + novelty_weight * novelty
        base = (1 - diversity) * rel
        if diversity <= 0 or not self.row:
            # No diversity term: the score is fixed, so one stable sort is the greedy pick.
            order = np.argsort(-base, kind="stable")[:k]
            return [items[i] for i in order]
        none = len(self.row)
        rows = np.fromiter((self.row.get(it, none) for it in items), dtype=np.int64, count=n)
        sub = self.matrix[rows]
        inter = sub @ sub.T
        size = self.size[rows]
        union = size[:, None] + size[None, :] - inter
        sim = np.divide(inter, union, out=np.zeros((n, n)), where=union > 0)
        max_sim = np.zeros(n)
        alive = np.ones(n, dtype=bool)
        picked: list[str] = []
        for _ in range(min(k, n)):
            score = base - diversity * max_sim
            score[~alive] = -np.inf
            best = int(np.argmax(score))
            picked.append(items[best])
            alive[best] = False
            np.maximum(max_sim, sim[best], out=max_sim)
        return picked


class PopularityNovelty:
    """Self-information novelty of an item from its interaction count ``c``:
    ``log(1 + max_count) - log(1 + c)`` scaled to [0, 1] (0 for the most popular item, 1 for an
    item nobody interacted with). A log scale because item popularity is long-tailed: a linear
    one would make every tail item look the same."""

    def __init__(self, counts: Mapping[str, float]) -> None:
        self.items = pd.Index([str(i) for i in counts])
        values = np.log1p(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
        top = float(values.max()) if len(values) else 0.0
        self.novelty = 1.0 - values / top if top > 0 else np.ones(len(values))

    def __len__(self) -> int:
        return len(self.items)

    def of(self, items: Sequence[str]) -> np.ndarray:
        """Novelty of each of ``items`` (1 for an item without a count)."""
        idx = self.items.get_indexer(pd.Index(list(items)))
        return np.where(idx >= 0, self.novelty[np.maximum(idx, 0)], 1.0)

    @classmethod
    def from_model(cls, model: Popularity) -> PopularityNovelty:
        """From a fitted popularity model's per-item counts."""
        inter = model.interactions
        scores = model.score_users(np.zeros(1, dtype=np.int64))[0]
        return cls(dict(zip(inter.item_ids.astype(str), scores, strict=True)))


class ReRankerConfig(BaseModel):
    """The re-ranker's ``user_config``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    diversity: float = Field(default=0.2, ge=0.0, le=1.0)
    """MMR weight: 0 keeps the relevance order, 1 picks for genre variety alone."""
    novelty: float = Field(default=0.0, ge=0.0, le=1.0)
    """Long-tail weight: an item's relevance becomes ``(1 - novelty) * rel + novelty * nov``
    with ``nov = 1 - log(1 + count) / log(1 + max count)``, so less-exposed items move up (the
    feedback-loop mitigation; 0: off, 1: by novelty alone). Counts come from the latest
    ``popularity_model`` version in the registry."""
    popularity_model: str = "popularity"
    """Registry model whose item counts define popularity for ``novelty``."""


def rerank(
    index: GenreIndex,
    novelty: PopularityNovelty | None,
    settings: ReRankerConfig,
    lists: Sequence[Sequence[str]],
    ks: Sequence[int],
) -> list[list[str]]:
    """Top-``k`` of each list after the diversity and novelty terms of ``settings``: what the
    serving re-ranker does, callable without Serve (the feedback-loop experiment uses it)."""
    use = novelty if novelty is not None and settings.novelty > 0 else None
    return [
        index.mmr(
            items,
            k,
            settings.diversity,
            use.of(items) if use is not None else None,
            settings.novelty,
        )
        for items, k in zip(lists, ks, strict=True)
    ]


@serve.deployment(**INTERNAL_DEPLOYMENT)
class ReRanker:
    """MMR re-ranking with ``diversity`` and a long-tail term with ``novelty`` from
    ``user_config``; genres and popularity from the registry.

    Genres are read (signature-verified) from the registry's item-metadata file; without one
    the diversity term is off. Popularity is the latest version of the ``popularity_model``
    (verified like any version) when ``novelty`` is on; without one the novelty term is off.
    """

    def __init__(self, registry: str, signing: SigningConfig) -> None:
        self.registry = Registry(registry, signing)
        self.settings: ReRankerConfig | None = None
        self.index = GenreIndex({})
        self.novelty: PopularityNovelty | None = None
        self._reload_genres()

    def _reload_popularity(self, settings: ReRankerConfig) -> None:
        if settings.novelty <= 0:
            self.novelty = None
            return
        try:
            model, mv = self.registry.load(settings.popularity_model)
        except Exception:
            # No or a refused popularity version: serve without the term rather than fail.
            log.exception("no popularity for the novelty term; keeping the last one")
            return
        if not isinstance(model, Popularity):
            log.error("%s is not a popularity model; novelty term unchanged", mv.name)
            return
        self.novelty = PopularityNovelty.from_model(model)
        log.info("re-ranker: popularity of %d items (%s)", len(self.novelty), mv.version)

    def _reload_genres(self) -> None:
        try:
            self.index = GenreIndex(read_item_metadata(self.registry))
        except Exception:
            # A tampered metadata file must not take the service down: keep the last good one.
            log.exception("item metadata refused; keeping %d known items", len(self.index))
        log.info("re-ranker: genres for %d items", len(self.index))

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply a :class:`ReRankerConfig`; also re-reads the item metadata and, with
        ``novelty`` on, the popularity."""
        first = self.settings is None
        self.settings = updated_config(self.settings, ReRankerConfig, user_config, "ReRanker")
        if not first:
            self._reload_genres()
        self._reload_popularity(self.settings)

    # async although it never awaits: Serve runs a sync method on a worker thread, and that
    # hand-off cost more than MMR itself when profiled under load (BENCHMARKS.md).
    async def rerank_batch(self, lists: list[list[str]], ks: list[int]) -> list[list[str]]:
        """Top-k of each list after MMR and the novelty term, in one actor call."""
        return rerank(self.index, self.novelty, self.settings or ReRankerConfig(), lists, ks)
