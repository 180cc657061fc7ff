"""Item-based k-nearest-neighbours on implicit feedback (Sarwar et al. 2001; Deshpande & Karypis
2004), with the sparse, blocked kernel of ``implicit``'s ItemItemRecommender."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ray_app.models.base import (
    HistoryScorer,
    Interactions,
    Recommendations,
    Recommender,
    feedback_matrix,
    fold_in_rows,
    rank_rows,
)
from ray_app.models.knn import (
    KNNConfig,
    csr_from_state,
    csr_state,
    knn_for_config,
    resolve_threads,
    sparse_product_csr,
)
from ray_app.models.topk import segment_top_k


class ItemKNNConfig(KNNConfig):
    """Configuration for :class:`ItemKNN`; the shared neighbourhood fields are in
    :class:`~ray_app.models.knn.KNNConfig`."""

    k: int = Field(default=100, ge=1)
    """Neighbours kept per target item (column pruning of the similarity matrix)."""
    pruning: Literal["column", "row"] = "column"
    """``column``: each target item keeps its ``k`` most similar items of the history
    (Deshpande & Karypis; LensKit's default); ``row``: each history item votes for its ``k``
    most similar items (``implicit``'s ItemItemRecommender). Same fit; ``row`` scores faster
    (exactly ``k`` candidates per history item) but ranks worse; BENCHMARKS.md has both."""
    num_threads: int = Field(default=0, ge=0)
    """Threads for fitting and batch ranking; 0 uses every core this process may run on."""


class ItemKNN(Recommender[ItemKNNConfig], HistoryScorer):
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
        w = knn_for_config(x.T.tocsr(), cfg, cfg.num_threads)
        # Scoring wants S[source, target]; w's rows are targets (column pruning) or, used as is,
        # sources with their own k nearest (row pruning); cosine, tf-idf and bm25 are symmetric.
        self.similarity_ = w.T.tocsr() if cfg.pruning == "column" else w
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

    def can_score(self, user_idx: np.ndarray) -> np.ndarray:
        """Users with at least one interaction; an empty history has no neighbours to use."""
        x, _ = self._parts()
        return np.diff(x.indptr)[np.asarray(user_idx, dtype=np.int64)] > 0

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """``X[user_idx] @ S`` as a dense array."""
        x, s = self._parts()
        return np.asarray((x[np.asarray(user_idx, dtype=np.int64)] @ s).toarray())

    def rank_items(
        self, user_idx: np.ndarray, k: int, exclude_seen: bool = True, batch_size: int = 1024
    ) -> tuple[np.ndarray, np.ndarray]:
        """Same result as :meth:`Recommender.rank_items`, computed faster.

        Scores stay sparse: one product ``[X_u | seen_u] @ [S ; -BIG·I]`` both scores the
        users' candidate items and pushes every seen item to about ``-BIG``; the top ``k``
        positive scores are selected per row on those entries only (exact tie rule: lower
        item index first), and items with no score at all are ranked after them by index,
        as zero-score items are in the generic path. Batches run on ``num_threads`` threads.
        """
        if k <= 0:
            raise ValueError(f"k must be a positive integer, got {k}")
        inter = self._require_fitted()
        x, s = self._parts()
        user_idx = np.asarray(user_idx, dtype=np.int64)
        n_items = inter.n_items
        kk = min(k, n_items)
        items = np.full((len(user_idx), kk), -1, dtype=np.int64)
        top_scores = np.full((len(user_idx), kk), -np.inf, dtype=np.float64)
        scorable = np.flatnonzero(self.can_score(user_idx)) if len(user_idx) else user_idx
        if len(scorable) == 0:
            return items, top_scores
        seen_m = inter.matrix.tocsr()
        if exclude_seen:
            minus_big = sp.identity(n_items, dtype=np.float32, format="csr") * np.float32(-1e30)
            s_ext = sp.vstack([s, minus_big], format="csr", dtype=np.float32)

        # Batches are cut by work (multiply-adds, which also bound the output buffers), not
        # only by users: with column pruning a popular item's row of S can be very long.
        per_item = np.diff(s.indptr).astype(np.float64)
        xs = x[user_idx[scorable]]
        ones = sp.csr_matrix((np.ones(xs.nnz), xs.indices, xs.indptr), shape=xs.shape)
        work = np.cumsum(ones @ per_item)
        cuts = [0]
        budget = 1 << 22
        while cuts[-1] < len(scorable):
            lo = cuts[-1]
            base_work = work[lo - 1] if lo > 0 else 0
            hi = int(np.searchsorted(work, base_work + budget, side="right"))
            cuts.append(min(len(scorable), max(lo + 1, min(hi, lo + batch_size))))

        def run(batch: int) -> None:
            chunk = scorable[cuts[batch] : cuts[batch + 1]]
            rows = user_idx[chunk]
            a = x[rows]
            seen = seen_m[rows]
            if exclude_seen:
                # The stored structure, not nonzero(): a 0-weight interaction was still seen.
                flags = sp.csr_matrix(
                    (np.ones(seen.nnz, np.float32), seen.indices, seen.indptr), shape=seen.shape
                )
                cp, cj, cx = sparse_product_csr(sp.hstack([a, flags], format="csr"), s_ext)
            else:
                cp, cj, cx = sparse_product_csr(a, s)
            if np.isnan(cx).any():
                # Same contract as the generic path: a corrupt model fails loudly so that the
                # caller falls back, instead of ranking arbitrary items.
                raise FloatingPointError(
                    f"{type(self).__name__} produced NaN scores: the fitted state is corrupt; "
                    "retrain the model or load another version"
                )
            got, vals = segment_top_k(cp, cj, cx, kk)
            for r in np.flatnonzero(got[:, -1] < 0):  # fewer than k scored: zeros by index
                have = got[r][got[r] >= 0]
                skip = have if not exclude_seen else np.concatenate([have, seen[r].indices])
                need = kk - len(have)
                pool = np.arange(min(n_items, need + len(skip)))
                fill = pool[~np.isin(pool, skip)][:need]
                got[r, len(have) : len(have) + len(fill)] = fill
                vals[r, len(have) : len(have) + len(fill)] = 0.0
            items[chunk] = got
            top_scores[chunk] = np.where(got >= 0, vals, -np.inf)

        batches = range(len(cuts) - 1)
        threads = min(resolve_threads(self.config.num_threads), len(batches))
        if threads <= 1:
            for b in batches:
                run(b)
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(run, batches))
        return items, top_scores

    def recommend_from_history(
        self,
        user_ids: Sequence[str],
        histories: Sequence[Sequence[str]],
        k: int = 10,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> Recommendations:
        """See :class:`HistoryScorer`: one sparse product ``rows @ S`` for the folded-in rows
        (serving batches are small, so the scores are made dense for the top-k)."""
        x, s = self._parts()
        inter = self._require_fitted()
        rows = fold_in_rows(inter, x, user_ids, histories)
        return rank_rows(inter, rows, (rows @ s).toarray(), user_ids, k, exclude)

    def _state(self) -> dict[str, Any]:
        _, s = self._parts()
        return csr_state("similarity", s)

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.similarity_ = csr_from_state("similarity", state)
        self._x = None


__all__ = ["ItemKNN", "ItemKNNConfig"]
