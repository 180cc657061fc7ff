"""Item-based k-nearest-neighbours on implicit feedback (Sarwar et al. 2001; Deshpande & Karypis
2004), with the sparse, blocked kernel of ``implicit``'s ItemItemRecommender."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ray_app.models.base import Interactions, ModelConfig, Recommender
from ray_app.models.similarity import (
    Feedback,
    Similarity,
    csr_from_state,
    csr_state,
    feedback_matrix,
    knn_similarity,
)


class ItemKNNConfig(ModelConfig):
    """Configuration for :class:`ItemKNN`."""

    k: int = Field(default=100, ge=1)
    """Neighbours kept per target item (column pruning of the similarity matrix)."""
    shrinkage: float = Field(default=0.0, ge=0.0)
    """Added to the cosine denominator; damps similarities supported by few co-occurrences."""
    similarity: Similarity = "cosine"
    """``cosine``, ``tfidf`` (cosine on TF-IDF weighted item vectors) or ``bm25`` (dot product on
    BM25 weighted item vectors)."""
    min_similarity: float = Field(default=0.0, ge=0.0)
    """Similarities at or below this are dropped before pruning."""
    feedback: Feedback = "binary"
    """``binary``: every interaction counts 1; ``weighted``: use the interaction weights."""
    block_size: int = Field(default=1024, ge=1)
    """Items per block when computing similarities; bounds peak memory."""
    bm25_k1: float = Field(default=1.2, gt=0.0)
    """BM25 term-saturation parameter (only for ``similarity='bm25'``)."""
    bm25_b: float = Field(default=0.75, ge=0.0, le=1.0)
    """BM25 length-normalisation parameter (only for ``similarity='bm25'``)."""


class ItemKNN(Recommender[ItemKNNConfig]):
    """Score of item ``i`` for user ``u`` = Σ over items ``j`` in u's history of ``sim(j, i)``,
    where only the ``k`` most similar items ``j`` of each target ``i`` are kept.

    Scoring is one sparse product, ``X[users] @ S``, with ``S`` the pruned items x items
    similarity (row: source item in the history, column: target item).
    """

    name = "itemknn"
    config_class = ItemKNNConfig

    def __init__(self, config: ItemKNNConfig | None = None) -> None:
        super().__init__(config)
        self.similarity_: sp.csr_matrix | None = None
        self._x: sp.csr_matrix | None = None

    def fit(self, interactions: Interactions) -> Self:
        """Compute the pruned item-item similarity matrix in blocks of ``block_size`` items."""
        cfg = self.config
        x = feedback_matrix(interactions.matrix, cfg.feedback)
        # Row t of w = the k nearest source items of target item t; scoring wants source rows.
        w = knn_similarity(
            x.T.tocsr(),
            k=cfg.k,
            similarity=cfg.similarity,
            shrinkage=cfg.shrinkage,
            min_similarity=cfg.min_similarity,
            block_size=cfg.block_size,
            bm25_k1=cfg.bm25_k1,
            bm25_b=cfg.bm25_b,
        )
        self.similarity_ = w.T.tocsr()
        self.similarity_.sort_indices()
        self._x = x
        self.interactions_ = interactions
        return self

    def _parts(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        inter = self._require_fitted()
        if self._x is None:
            self._x = feedback_matrix(inter.matrix, self.config.feedback)
        assert self.similarity_ is not None
        return self._x, self.similarity_

    def neighbours(self, item_idx: int) -> tuple[np.ndarray, np.ndarray]:
        """``(source item indices, similarities)`` kept for target item ``item_idx``, best first."""
        _, s = self._parts()
        col = s[:, item_idx].tocoo()
        order = np.lexsort((col.row, -col.data))
        return col.row[order].astype(np.int64), col.data[order].astype(np.float64)

    def can_score(self, user_idx: np.ndarray) -> np.ndarray:
        """Users with at least one interaction; an empty history has no neighbours to use."""
        x, _ = self._parts()
        return np.diff(x.indptr)[np.asarray(user_idx, dtype=np.int64)] > 0

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """``X[user_idx] @ S`` as a dense array."""
        x, s = self._parts()
        return np.asarray((x[np.asarray(user_idx, dtype=np.int64)] @ s).toarray())

    def _state(self) -> dict[str, Any]:
        _, s = self._parts()
        return csr_state("similarity", s)

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.similarity_ = csr_from_state("similarity", state)
        self._x = None


__all__ = ["ItemKNN", "ItemKNNConfig"]
