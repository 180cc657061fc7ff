"""Diversity re-ranker: maximal marginal relevance (MMR) over item genres."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ray import serve

from ray_app.registry.signing import SigningConfig
from ray_app.registry.store import Registry, read_item_metadata

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


@serve.deployment(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
class ReRanker:
    """MMR re-ranking with ``diversity`` from ``user_config``; genres from the registry.

    Genres are read (signature-verified) from the registry's item-metadata file; without one
    the re-ranker passes lists through unchanged.
    """

    def __init__(self, registry: str, signing: SigningConfig, diversity: float = 0.2) -> None:
        self.registry = Registry(registry, signing)
        self.diversity = diversity
        self.genres: dict[str, list[str]] = {}
        self._reload_genres()

    def _reload_genres(self) -> None:
        try:
            self.genres = read_item_metadata(self.registry)
        except Exception:
            # A tampered metadata file must not take the service down: keep the last good one.
            log.exception("item metadata refused; keeping %d known items", len(self.genres))
        log.info("re-ranker: genres for %d items", len(self.genres))

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """``{"diversity": float in [0, 1]}``; also re-reads the item metadata."""
        d = float(user_config.get("diversity", self.diversity))
        self.diversity = min(max(d, 0.0), 1.0)
        self._reload_genres()

    def rerank(self, items: list[str], k: int) -> dict[str, Any]:
        """``{"items": top-k after MMR, "diversity": weight used}``."""
        return {"items": mmr(items, self.genres, k, self.diversity), "diversity": self.diversity}
