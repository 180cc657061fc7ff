"""Sparse building blocks shared by the neighbourhood models (item-KNN, user-KNN).

Everything here works on ``scipy.sparse`` CSR matrices in row blocks, so memory is bounded by
``block_size x n`` nonzeros of one block's similarities plus the pruned ``k``-nearest result,
never by a dense ``n x n`` matrix.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

Feedback = Literal["binary", "weighted"]
Similarity = Literal["cosine", "bm25", "tfidf"]


def feedback_matrix(matrix: sp.csr_matrix, feedback: Feedback) -> sp.csr_matrix:
    """The user x item matrix a model learns from: all stored entries set to 1, or the weights.

    ``binary`` keeps explicit zero-weight entries as 1 on purpose: an interaction was recorded,
    so the user has seen the item.
    """
    m = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    if feedback == "binary":
        m.data[:] = 1.0
    elif feedback != "weighted":
        raise ValueError(f"feedback must be 'binary' or 'weighted', got {feedback!r}")
    return m


def bm25_weight(rows: sp.csr_matrix, k1: float = 1.2, b: float = 0.75) -> sp.csr_matrix:
    """Okapi BM25 weighting of each row (a "document") over its columns (the "terms").

    Mirrors ``implicit.nearest_neighbours.bm25_weight``: ``idf = log(N) - log1p(df)`` per column,
    clipped at 0 so that a column present in almost every row cannot flip signs.
    """
    m = sp.coo_matrix(rows, dtype=np.float32)
    n_docs = float(m.shape[0])
    df = np.bincount(m.col, minlength=m.shape[1]).astype(np.float64)
    idf = np.maximum(np.log(max(n_docs, 1.0)) - np.log1p(df), 0.0)
    row_sums = np.ravel(np.asarray(m.sum(axis=1), dtype=np.float64))
    avg = row_sums.mean() if row_sums.size and row_sums.mean() > 0 else 1.0
    length_norm = (1.0 - b) + b * row_sums / avg
    data = m.data.astype(np.float64)
    weighted = data * (k1 + 1.0) / (k1 * length_norm[m.row] + data) * idf[m.col]
    return sp.csr_matrix((weighted.astype(np.float32), (m.row, m.col)), shape=m.shape)


def tfidf_weight(rows: sp.csr_matrix) -> sp.csr_matrix:
    """TF-IDF weighting of each row: ``sqrt(tf) * idf`` with ``idf = log(N) - log1p(df)`` (≥ 0)."""
    m = sp.coo_matrix(rows, dtype=np.float32)
    n_docs = float(m.shape[0])
    df = np.bincount(m.col, minlength=m.shape[1]).astype(np.float64)
    idf = np.maximum(np.log(max(n_docs, 1.0)) - np.log1p(df), 0.0)
    weighted = np.sqrt(m.data.astype(np.float64)) * idf[m.col]
    return sp.csr_matrix((weighted.astype(np.float32), (m.row, m.col)), shape=m.shape)


def keep_top_k_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest stored values of every row (ties: lower column index wins).

    Fully vectorised: one lexsort over all nonzeros, then each entry's rank within its row is
    its position minus the row start.
    """
    m = sp.csr_matrix(matrix)
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    n_rows = m.shape[0]
    counts = np.diff(m.indptr)
    if counts.size == 0 or counts.max(initial=0) <= k:
        return m
    rows = np.repeat(np.arange(n_rows), counts)
    order = np.lexsort((m.indices, -m.data, rows))
    rank = np.arange(m.nnz) - m.indptr[rows[order]]
    keep = np.sort(order[rank < k])
    return sp.csr_matrix(
        (m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape, dtype=m.dtype
    )


def knn_similarity(
    entities: sp.csr_matrix,
    *,
    k: int,
    similarity: Similarity = "cosine",
    shrinkage: float = 0.0,
    min_similarity: float = 0.0,
    block_size: int = 1024,
    bm25_k1: float = 1.2,
    bm25_b: float = 0.75,
) -> sp.csr_matrix:
    """Row-wise k-nearest-neighbour similarity between the rows of ``entities``.

    Returns an ``n x n`` CSR matrix ``W`` where row ``t`` holds the (at most) ``k`` most similar
    other rows ``s`` with ``W[t, s] = sim(t, s) > min_similarity``; the diagonal is always empty.

    ``similarity``:
      * ``cosine`` - ``dot(a, b) / (|a| |b| + shrinkage)``;
      * ``tfidf`` - the same cosine on TF-IDF weighted rows (rare columns count more);
      * ``bm25`` - raw dot product of BM25 weighted rows (as ``implicit``'s BM25Recommender);
        ``shrinkage`` is ignored because BM25's length normalisation already damps long rows.

    Rows are processed ``block_size`` at a time: each block's similarities against all rows are
    computed by a sparse product, pruned to ``k`` per row, and only then kept.
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be a positive integer, got {block_size}")
    e = sp.csr_matrix(entities, dtype=np.float32)
    if similarity == "bm25":
        e = bm25_weight(e, bm25_k1, bm25_b)
    elif similarity == "tfidf":
        e = tfidf_weight(e)
    elif similarity != "cosine":
        raise ValueError(f"similarity must be one of 'cosine', 'bm25', 'tfidf', got {similarity!r}")
    n = e.shape[0]
    normalise = similarity in ("cosine", "tfidf")
    norms = np.sqrt(np.ravel(np.asarray(e.multiply(e).sum(axis=1), dtype=np.float64)))
    et = e.T.tocsr()
    parts: list[sp.csr_matrix] = []
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        g = (e[start:stop] @ et).tocoo()
        rows = g.row.astype(np.int64)
        cols = g.col.astype(np.int64)
        vals = g.data.astype(np.float64)
        if normalise:
            denom = norms[rows + start] * norms[cols] + shrinkage
            vals = np.divide(vals, denom, out=np.zeros_like(vals), where=denom > 0)
        keep = (cols != rows + start) & (vals > min_similarity)
        block = sp.csr_matrix(
            (vals[keep].astype(np.float32), (rows[keep], cols[keep])), shape=(stop - start, n)
        )
        parts.append(keep_top_k_per_row(block, k))
    if not parts:
        return sp.csr_matrix((n, n), dtype=np.float32)
    out = sp.vstack(parts, format="csr")
    out.sort_indices()
    return sp.csr_matrix(out, dtype=np.float32)


def csr_state(prefix: str, matrix: sp.csr_matrix) -> dict[str, np.ndarray]:
    """npz-ready arrays for a CSR matrix (no pickle), keys prefixed with ``prefix``."""
    m = sp.csr_matrix(matrix)
    return {
        f"{prefix}_data": m.data,
        f"{prefix}_indices": m.indices,
        f"{prefix}_indptr": m.indptr,
        f"{prefix}_shape": np.asarray(m.shape, dtype=np.int64),
    }


def csr_from_state(prefix: str, state: dict[str, np.ndarray]) -> sp.csr_matrix:
    """Inverse of :func:`csr_state`."""
    shape = tuple(int(x) for x in state[f"{prefix}_shape"])
    return sp.csr_matrix(
        (state[f"{prefix}_data"], state[f"{prefix}_indices"], state[f"{prefix}_indptr"]),
        shape=shape,
    )
