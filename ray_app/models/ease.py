"""EASE^R (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

A linear item-item model ``B`` learned in closed form::

    min_B ||X - X B||² + λ ||B||²   subject to   diag(B) = 0
    P = (XᵀX + λI)⁻¹,   B = -P / diag(P)  (column-wise),   diag(B) = 0

It needs a dense ``n_items x n_items`` matrix, so it is meant for catalogues up to a few tens of
thousands of items (:attr:`EASEConfig.max_items` guards this).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Self

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from pydantic import Field

from ray_app.config import ConfigError
from ray_app.models.base import (
    Feedback,
    HistoryScorer,
    Interactions,
    ModelConfig,
    Recommendations,
    Recommender,
    feedback_matrix,
    fold_in_rows,
    rank_rows,
)


class EASEConfig(ModelConfig):
    """Configuration for :class:`EASE`."""

    l2: float = Field(default=400.0, gt=0.0)
    """λ, the L2 penalty on ``B``. The default is the best known on MovieLens-100K (see
    BENCHMARKS.md); larger data wants more."""
    feedback: Feedback = "binary"
    """``binary``: every interaction counts 1; ``weighted``: use the interaction weights."""
    max_items: int = Field(default=30_000, ge=1)
    """Refuse to fit above this many items: memory is ``8 · n_items²`` bytes while fitting."""


class EASE(Recommender[EASEConfig], HistoryScorer):
    """Scores are ``X[users] @ B``; any user with at least one interaction can be scored, and
    a fresh history is scored exactly the same way (one dense product per batch)."""

    name = "ease"
    config_class = EASEConfig

    def __init__(self, config: EASEConfig | None = None) -> None:
        super().__init__(config)
        self.weights_: np.ndarray | None = None
        self._x: sp.csr_matrix | None = None

    def fit(self, interactions: Interactions) -> Self:
        """Solve for ``B`` with one Cholesky factorisation of the regularised Gram matrix."""
        cfg = self.config
        n = interactions.n_items
        if n > cfg.max_items:
            gib = 8 * n * n / 2**30
            raise ConfigError(
                f"EASE needs a dense {n} x {n} item matrix (~{gib:.1f} GiB) but "
                f"ease max_items is {cfg.max_items}: raise max_items if the memory is "
                "there, or use 'itemknn', which stays sparse"
            )
        x = feedback_matrix(interactions.matrix, cfg.feedback).astype(np.float64)
        gram = np.asarray((x.T @ x).toarray(), dtype=np.float64)
        gram[np.diag_indices(n)] += cfg.l2
        # The regularised Gram matrix is symmetric positive definite: Cholesky is about twice
        # as fast as a general inverse and numerically safer.
        factor = scipy.linalg.cho_factor(gram, overwrite_a=True, check_finite=False)
        p = scipy.linalg.cho_solve(factor, np.eye(n), overwrite_b=True, check_finite=False)
        b = p / (-np.diag(p))[None, :]
        b[np.diag_indices(n)] = 0.0
        self.weights_ = b.astype(np.float32)
        self._x = feedback_matrix(interactions.matrix, cfg.feedback)
        self.interactions_ = interactions
        return self

    def _parts(self) -> tuple[sp.csr_matrix, np.ndarray]:
        inter = self._require_fitted()
        if self._x is None:
            self._x = feedback_matrix(inter.matrix, self.config.feedback)
        assert self.weights_ is not None
        return self._x, self.weights_

    def can_score(self, user_idx: np.ndarray) -> np.ndarray:
        """Users with at least one interaction (an empty history scores every item 0)."""
        x, _ = self._parts()
        return np.diff(x.indptr)[np.asarray(user_idx, dtype=np.int64)] > 0

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """``X[user_idx] @ B`` as a dense array."""
        x, b = self._parts()
        return np.asarray(x[np.asarray(user_idx, dtype=np.int64)] @ b)

    def recommend_from_history(
        self,
        user_ids: Sequence[str],
        histories: Sequence[Sequence[str]],
        k: int = 10,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> Recommendations:
        """See :class:`HistoryScorer`: ``rows @ B`` for the folded-in rows."""
        x, b = self._parts()
        inter = self._require_fitted()
        rows = fold_in_rows(inter, x, user_ids, histories)
        return rank_rows(inter, rows, np.asarray(rows @ b), user_ids, k, exclude)

    def _state(self) -> dict[str, Any]:
        _, b = self._parts()
        return {"weights": b}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.weights_ = np.asarray(state["weights"], dtype=np.float32)
        self._x = None
