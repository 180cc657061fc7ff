"""Sparse row weightings (BM25, TF-IDF) that make rare columns count more in a similarity.

Rows are the "documents" and columns the "terms": for item-KNN a row is an item and its columns
are the users who interacted with it; for user-KNN the other way round.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


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
