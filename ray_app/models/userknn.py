"""User-based k-nearest-neighbours on implicit feedback (Resnick et al. 1994, Herlocker et al.
1999): a user's score for an item is the similarity-weighted vote of their nearest users."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ray_app.models.base import Interactions, Recommender, feedback_matrix
from ray_app.models.knn import KNNConfig, csr_from_state, csr_state, knn_for_config


class UserKNNConfig(KNNConfig):
    """Configuration for :class:`UserKNN`; the shared neighbourhood fields are in
    :class:`~ray_app.models.knn.KNNConfig`."""

    k: int = Field(default=50, ge=1)
    """Neighbours kept per user (row pruning of the user-user similarity matrix)."""


class UserKNN(Recommender[UserKNNConfig]):
    """Score of item ``i`` for user ``u`` = Σ over the ``k`` nearest users ``v`` of
    ``sim(u, v) · x[v, i]``; one sparse product ``W[users] @ X``.

    Only users present at fit time can be scored (their neighbourhoods are precomputed); users
    with an empty history have no neighbours and report ``can_score`` False.
    """

    name = "userknn"
    config_class = UserKNNConfig

    def __init__(self, config: UserKNNConfig | None = None) -> None:
        super().__init__(config)
        self.similarity_: sp.csr_matrix | None = None
        self._x: sp.csr_matrix | None = None

    def fit(self, interactions: Interactions) -> Self:
        """Compute each user's ``k`` nearest users in blocks of ``block_size`` users."""
        cfg = self.config
        x = feedback_matrix(interactions.matrix, cfg.feedback)
        self.similarity_ = knn_for_config(x, cfg)
        self._x = x
        self.interactions_ = interactions
        return self

    def _parts(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        inter = self._require_fitted()
        if self._x is None:
            self._x = feedback_matrix(inter.matrix, self.config.feedback)
        assert self.similarity_ is not None
        return self._x, self.similarity_

    def can_score(self, user_idx: np.ndarray) -> np.ndarray:
        """Users with at least one interaction."""
        x, _ = self._parts()
        return np.diff(x.indptr)[np.asarray(user_idx, dtype=np.int64)] > 0

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """``W[user_idx] @ X`` as a dense array."""
        x, w = self._parts()
        return np.asarray((w[np.asarray(user_idx, dtype=np.int64)] @ x).toarray())

    def _state(self) -> dict[str, Any]:
        _, w = self._parts()
        return csr_state("similarity", w)

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.similarity_ = csr_from_state("similarity", state)
        self._x = None
