"""Vectorised full-ranking metrics.

Conventions shared by every function here:

* ``recommended`` is an integer array ``n_users x L`` of item indices, best first, padded with
  ``-1`` where a list is shorter than ``L`` (an unknown user is a row of ``-1``). Metrics "at k"
  look at the first ``k`` columns.
* ``truth`` is the held-out relevant items, as a sparse ``n_users x n_items`` matrix (any
  stored entry is relevant) or as a sequence of item-index collections, one per row of
  ``recommended``. :func:`truth_matrix` converts the latter.
* Accuracy metrics return one value per user (``float64``); users with no relevant items get
  ``nan`` so that callers decide whether to drop them (``np.nanmean``) rather than have them
  silently count as 0 or 1.

Definitions (binary relevance):

* ``hit@k`` - 1 if any of the top ``k`` is relevant.
* ``precision@k`` - hits / ``k`` (the denominator is ``k`` even when fewer items were returned,
  so short lists are penalised).
* ``recall@k`` - hits / ``min(k, |truth|)`` ("truncated recall", as in LensKit and many papers):
  a perfect top-``k`` scores 1 even when the user has more than ``k`` relevant items. Pass
  ``truncated=False`` for the classic hits / ``|truth|``.
* ``ndcg@k`` - DCG with gain 1 and discount ``1 / log2(rank + 1)``, divided by the ideal DCG of
  ``min(k, |truth|)`` hits at the top.
* ``mrr@k`` - ``1 / rank`` of the first relevant item in the top ``k``, 0 if none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeAlias

import numpy as np
import scipy.sparse as sp

_ILD_CHUNK = 4096

Truth: TypeAlias = sp.spmatrix | sp.sparray | Sequence[Iterable[int]]


def truth_matrix(truth: Truth, n_items: int | None = None) -> sp.csr_matrix:
    """Sparse boolean ``n_users x n_items`` relevance matrix from sets/lists of item indices."""
    if sp.issparse(truth):
        m = sp.csr_matrix(truth)
        out = sp.csr_matrix((np.ones(m.nnz, dtype=bool), m.indices, m.indptr), shape=m.shape)
        return out
    lists = [np.unique(np.fromiter(t, dtype=np.int64)) for t in truth]
    lengths = np.array([len(t) for t in lists], dtype=np.int64)
    cols = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)
    if (cols < 0).any():
        raise ValueError("truth item indices must be ≥ 0")
    width = int(cols.max(initial=-1)) + 1
    if n_items is not None:
        if width > n_items:
            raise ValueError(f"truth has item index {width - 1} but n_items is {n_items}")
        width = n_items
    indptr = np.concatenate(([0], np.cumsum(lengths)))
    return sp.csr_matrix((np.ones(len(cols), dtype=bool), cols, indptr), shape=(len(lists), width))


def _check(recommended: np.ndarray, k: int) -> np.ndarray:
    rec = np.asarray(recommended)
    if rec.ndim != 2:
        raise ValueError(f"recommended must be 2-D (users x list length), got shape {rec.shape}")
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    return rec[:, :k].astype(np.int64, copy=False)


def hit_matrix(recommended: np.ndarray, truth: Truth, k: int) -> np.ndarray:
    """Boolean ``n_users x min(k, L)``: is the item at each rank relevant (padding never is)."""
    rec = _check(recommended, k)
    t = truth_matrix(truth)
    if t.shape[0] != rec.shape[0]:
        raise ValueError(
            f"truth has {t.shape[0]} rows but recommended has {rec.shape[0]}; align them by user"
        )
    n_items = max(t.shape[1], int(rec.max(initial=-1)) + 1, 1)
    # Encode (user, item) as one int64 key, then a sorted-membership test: O((nnz + n·k) log).
    rows = np.repeat(np.arange(t.shape[0], dtype=np.int64), np.diff(t.indptr))
    truth_keys = np.sort(rows * n_items + t.indices.astype(np.int64))
    rec_keys = np.arange(rec.shape[0], dtype=np.int64)[:, None] * n_items + rec
    if truth_keys.size == 0:
        return np.zeros(rec.shape, dtype=bool)
    pos = np.searchsorted(truth_keys, rec_keys)
    found = truth_keys[np.minimum(pos, truth_keys.size - 1)] == rec_keys
    return found & (rec >= 0)


def _n_relevant(truth: Truth, n_rows: int) -> np.ndarray:
    t = truth_matrix(truth)
    if t.shape[0] != n_rows:
        raise ValueError(f"truth has {t.shape[0]} rows but recommended has {n_rows}")
    return np.diff(t.indptr).astype(np.float64)


def _nan_where_empty(values: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    return np.where(n_rel > 0, values, np.nan)


def hit_at_k(recommended: np.ndarray, truth: Truth, k: int) -> np.ndarray:
    """Per-user 1.0 if any of the top ``k`` is relevant, else 0.0 (``nan``: no truth)."""
    hits = hit_matrix(recommended, truth, k)
    vals = np.asarray(hits.any(axis=1), dtype=np.float64)
    return _nan_where_empty(vals, _n_relevant(truth, len(hits)))


def precision_at_k(recommended: np.ndarray, truth: Truth, k: int) -> np.ndarray:
    """Per-user hits in the top ``k`` divided by ``k`` (``nan``: no truth)."""
    hits = hit_matrix(recommended, truth, k)
    vals = hits.sum(axis=1).astype(np.float64) / k
    return _nan_where_empty(vals, _n_relevant(truth, len(hits)))


def recall_at_k(
    recommended: np.ndarray, truth: Truth, k: int, *, truncated: bool = True
) -> np.ndarray:
    """Per-user hits / ``min(k, |truth|)`` (``truncated=True``) or hits / ``|truth|``."""
    hits = hit_matrix(recommended, truth, k)
    n_rel = _n_relevant(truth, len(hits))
    denom = np.minimum(n_rel, k) if truncated else n_rel
    vals = np.divide(hits.sum(axis=1), denom, out=np.zeros(len(hits)), where=denom > 0)
    return _nan_where_empty(vals, n_rel)


def ndcg_at_k(recommended: np.ndarray, truth: Truth, k: int) -> np.ndarray:
    """Per-user binary-gain NDCG@k (``nan``: no truth)."""
    hits = hit_matrix(recommended, truth, k)
    n_rel = _n_relevant(truth, len(hits))
    discounts = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    dcg = hits.astype(np.float64) @ discounts[: hits.shape[1]]
    ideal_cum = np.concatenate(([0.0], np.cumsum(discounts)))
    idcg = ideal_cum[np.minimum(n_rel, k).astype(np.int64)]
    vals = np.divide(dcg, idcg, out=np.zeros(len(hits)), where=idcg > 0)
    return _nan_where_empty(vals, n_rel)


def mrr_at_k(recommended: np.ndarray, truth: Truth, k: int) -> np.ndarray:
    """Per-user reciprocal rank of the first relevant item in the top ``k``, 0 if none."""
    hits = hit_matrix(recommended, truth, k)
    first = np.argmax(hits, axis=1)
    vals = np.where(hits.any(axis=1), 1.0 / (first + 1.0), 0.0)
    return _nan_where_empty(vals, _n_relevant(truth, len(hits)))


def catalog_coverage(recommended: np.ndarray, n_items: int, k: int | None = None) -> float:
    """Fraction of the ``n_items`` catalogue that appears in at least one top-``k`` list."""
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    rec = np.asarray(recommended)[:, :k] if k is not None else np.asarray(recommended)
    items = np.unique(rec[rec >= 0])
    return float(len(items)) / n_items


def _exposure(recommended: np.ndarray, n_items: int) -> np.ndarray:
    rec = np.asarray(recommended)
    return np.bincount(rec[rec >= 0].ravel(), minlength=n_items).astype(np.float64)


def exposure_gini(recommended: np.ndarray, n_items: int, k: int | None = None) -> float:
    """Gini coefficient of how often each catalogue item is recommended (0 equal, →1 one item).

    Items never recommended count with exposure 0, so a system that shows only a few items is
    unequal even if it shows them equally often. Returns 0.0 when nothing was recommended.
    """
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    rec = np.asarray(recommended)[:, :k] if k is not None else np.asarray(recommended)
    x = np.sort(_exposure(rec, n_items))
    total = x.sum()
    if total == 0 or n_items == 1:
        return 0.0
    ranks = np.arange(1, n_items + 1, dtype=np.float64)
    return float((2.0 * (ranks * x).sum() / (n_items * total)) - (n_items + 1.0) / n_items)


def novelty(
    recommended: np.ndarray, item_popularity: np.ndarray, n_users: int, k: int | None = None
) -> np.ndarray:
    """Per-user mean self-information ``-log2(p_i)`` of the recommended items, in bits.

    ``p_i = (count_i + 1) / (n_users + 1)``: the share of training users who interacted with
    item ``i``, Laplace-smoothed so that never-seen items are finite. Empty lists give ``nan``.
    """
    if n_users <= 0:
        raise ValueError(f"n_users must be positive, got {n_users}")
    rec = np.asarray(recommended)[:, :k] if k is not None else np.asarray(recommended)
    pop = np.asarray(item_popularity, dtype=np.float64)
    info = -np.log2((pop + 1.0) / (n_users + 1.0))
    valid = rec >= 0
    vals = np.where(valid, info[np.where(valid, rec, 0)], 0.0)
    n = valid.sum(axis=1)
    return np.divide(vals.sum(axis=1), n, out=np.full(len(rec), np.nan), where=n > 0)


def intra_list_diversity(
    recommended: np.ndarray, item_features: np.ndarray, k: int | None = None
) -> np.ndarray:
    """Per-user mean pairwise cosine distance ``1 - cos(f_i, f_j)`` within the top-``k`` list.

    ``item_features`` is ``n_items x d`` (e.g. one-hot genres). An item with an all-zero vector
    has cosine 0 with everything (distance 1). Lists with fewer than two items give ``nan``.
    """
    rec = np.asarray(recommended)[:, :k] if k is not None else np.asarray(recommended)
    feats = np.asarray(item_features, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"item_features must be 2-D (items x features), got {feats.shape}")
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    unit = np.divide(feats, norms, out=np.zeros_like(feats), where=norms > 0)
    out = np.full(len(rec), np.nan)
    # Chunk users so the (users x k x k) Gram stack stays small for big evaluations.
    for start in range(0, len(rec), _ILD_CHUNK):
        chunk = rec[start : start + _ILD_CHUNK]
        valid = chunk >= 0
        vecs = unit[np.where(valid, chunk, 0)] * valid[..., None]
        sims = np.einsum("uid,ujd->uij", vecs, vecs)
        pair = valid[:, :, None] & valid[:, None, :]
        pair &= ~np.eye(chunk.shape[1], dtype=bool)[None]
        n_pairs = pair.sum(axis=(1, 2))
        dist = np.where(pair, 1.0 - sims, 0.0).sum(axis=(1, 2))
        np.divide(dist, n_pairs, out=out[start : start + len(chunk)], where=n_pairs > 0)
    return out
