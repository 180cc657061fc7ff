"""Most-popular baseline, and the fallback that serving uses for users no other model knows."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal, Self

import numpy as np
import pandas as pd

from ray_app.models.base import FallbackRanker, Interactions, ModelConfig, Recommender
from ray_app.models.topk import top_k_indices


class PopularityConfig(ModelConfig):
    """Configuration for :class:`Popularity`."""

    weighting: Literal["count", "weight"] = "count"
    """``count``: number of distinct users who interacted with the item; ``weight``: the sum of
    interaction weights (e.g. minutes watched or rating sum)."""


class Popularity(Recommender[PopularityConfig], FallbackRanker):
    """Scores every item by its global popularity; the same list (minus seen items) for everyone.

    Ties are broken by the lower item index (first-seen order of :class:`Interactions`), so the
    ranking is deterministic.
    """

    name = "popularity"
    config_class = PopularityConfig

    def __init__(self, config: PopularityConfig | None = None) -> None:
        super().__init__(config)
        self.item_scores_: np.ndarray | None = None

    def fit(self, interactions: Interactions) -> Self:
        """Count (or sum the weights of) interactions per item."""
        m = interactions.matrix.tocsc()
        if self.config.weighting == "count":
            # Count stored entries per column: each (user, item) pair is stored once in CSR.
            scores = np.diff(m.indptr).astype(np.float64)
        else:
            scores = np.ravel(np.asarray(m.sum(axis=0), dtype=np.float64))
        self.item_scores_ = scores
        self.interactions_ = interactions
        return self

    def _scores(self) -> np.ndarray:
        self._require_fitted()
        assert self.item_scores_ is not None
        return self.item_scores_

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """The popularity vector, repeated for each requested user."""
        scores = self._scores()
        return np.broadcast_to(scores, (len(user_idx), scores.shape[0]))

    def top_items(self, k: int, exclude: Collection[str] | None = None) -> list[str]:
        """The ``k`` most popular item ids not in ``exclude``, best first.

        Works for any user, including ones this model has never seen: serving calls it as the
        last-resort fallback.
        """
        if k <= 0:
            raise ValueError(f"k must be a positive integer, got {k}")
        inter = self._require_fitted()
        scores = self._scores().copy()
        if exclude:
            idx = inter.item_ids.get_indexer(pd.Index(list(exclude)))
            scores[idx[idx >= 0]] = -np.inf
        top = top_k_indices(scores[None, :], min(k, inter.n_items))[0]
        top = top[np.isfinite(scores[top])]
        return inter.item_ids.to_numpy()[top].tolist()

    def _state(self) -> dict[str, Any]:
        return {"item_scores": self._scores()}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.item_scores_ = np.asarray(state["item_scores"], dtype=np.float64)
