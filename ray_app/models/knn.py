"""The k-nearest-neighbour similarity kernel shared by item-KNN and user-KNN, its sparse
products, and the neighbourhood models' common config.

Everything here works on ``scipy.sparse`` CSR matrices in row blocks, so memory is bounded by
``block_size x n`` nonzeros of one block's similarities plus the pruned ``k``-nearest result,
never by a dense ``n x n`` matrix.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ray_app.models.base import Feedback, ModelConfig
from ray_app.models.topk import RunningTopK, column_top_k, flat_entries, row_candidates
from ray_app.models.weighting import bm25_weight, tfidf_weight

_st: Any
try:  # scipy's compiled sparse kernels; private, so there is a public fallback
    from scipy.sparse import _sparsetools

    _st = _sparsetools
except ImportError:  # pragma: no cover - scipy reorganised
    _st = None

Similarity = Literal["cosine", "bm25", "tfidf"]
"""How two rows are compared; see :func:`knn_similarity`."""


class KNNConfig(ModelConfig):
    """What item-KNN and user-KNN share: how neighbours are found and how many are kept.

    Subclasses set ``k``'s default and add their own fields; the shared defaults are the best
    known on MovieLens-100K (see BENCHMARKS.md, "Offline accuracy on MovieLens-100K").
    """

    k: int = Field(ge=1)
    """Neighbours kept per scored entity (item or user)."""
    shrinkage: float = Field(default=0.0, ge=0.0)
    """Added to the cosine denominator; damps similarities supported by few co-occurrences."""
    similarity: Similarity = "tfidf"
    """``cosine``, ``tfidf`` (cosine on TF-IDF weighted vectors: rare co-occurrences count more)
    or ``bm25`` (dot product on BM25 weighted vectors)."""
    min_similarity: float = Field(default=0.0, ge=0.0)
    """Similarities at or below this are dropped before pruning."""
    feedback: Feedback = "binary"
    """``binary``: every interaction counts 1; ``weighted``: use the interaction weights."""
    block_size: int = Field(default=1024, ge=1)
    """Rows (items for item-KNN, users for user-KNN) per block when computing similarities;
    bounds peak memory."""
    bm25_k1: float = Field(default=1.2, gt=0.0)
    """BM25 term-saturation parameter (only for ``similarity='bm25'``)."""
    bm25_b: float = Field(default=0.75, ge=0.0, le=1.0)
    """BM25 length-normalisation parameter (only for ``similarity='bm25'``)."""


def resolve_threads(num_threads: int) -> int:
    """``num_threads`` or, for 0, the cores this process may run on."""
    if num_threads > 0:
        return num_threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def sparse_product_into(
    a: sp.csr_matrix, start: int, y: sp.csr_matrix, out: np.ndarray, chunk_entries: int = 1 << 22
) -> None:
    """``out[: n - start] = a[start:] @ y`` as a dense float32 array, without copying ``a``.

    Calls scipy's compiled Gustavson kernel directly with output buffers sized for a dense
    result, which skips scipy's symbolic (sizing) pass because the upper bound is known. Rows go ``chunk_entries / width`` at a time so the buffers stay small.
    """
    rows, width = a.shape[0] - start, y.shape[1]
    dense = out[:rows]
    dense[...] = 0.0
    if rows == 0 or width == 0:
        return
    if _st is None:  # private scipy module moved: take the public (slower) path
        dense += (a[start:] @ y).toarray()
        return
    itype = a.indptr.dtype
    yp, yj = y.indptr.astype(itype, copy=False), y.indices.astype(itype, copy=False)
    step = max(1, chunk_entries // width)
    cp = np.empty(min(step, rows) + 1, dtype=itype)
    cj = np.empty(min(step, rows) * width, dtype=itype)
    cx = np.empty(min(step, rows) * width, dtype=np.float32)
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        m = r1 - r0
        ap = a.indptr[start + r0 : start + r1 + 1]
        _st.csr_matmat(m, width, ap, a.indices, a.data, yp, yj, y.data, cp[: m + 1], cj, cx)
        nnz = int(cp[m])
        _st.csr_todense(m, width, cp[: m + 1], cj[:nnz], cx[:nnz], dense[r0:r1])


def sparse_product_csr(
    a: sp.csr_matrix, b: sp.csr_matrix
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``a @ b`` as raw CSR arrays ``(indptr, indices, data)``, float32.

    Sizes the output by the exact multiply-add count instead of scipy's symbolic pass.
    """
    m, n = a.shape[0], b.shape[1]
    if _st is None:
        c = sp.csr_matrix(a @ b, dtype=np.float32)
        return c.indptr, c.indices, c.data
    itype = np.int64 if max(a.nnz, b.nnz, m, n) >= 2**31 - 1 else np.int32
    ap, aj = a.indptr.astype(itype, copy=False), a.indices.astype(itype, copy=False)
    bp, bj = b.indptr.astype(itype, copy=False), b.indices.astype(itype, copy=False)
    bound = int(np.diff(b.indptr)[a.indices].sum(dtype=np.int64))
    if bound >= 2**31 - 1:
        itype = np.int64
        ap, aj, bp, bj = (z.astype(np.int64) for z in (ap, aj, bp, bj))
    cp = np.empty(m + 1, dtype=itype)
    cj = np.empty(max(bound, 1), dtype=itype)
    cx = np.empty(max(bound, 1), dtype=np.float32)
    _st.csr_matmat(m, n, ap, aj, a.data.astype(np.float32, copy=False), bp, bj,
                   b.data.astype(np.float32, copy=False), cp, cj, cx)  # fmt: skip
    nnz = int(cp[m])
    return cp, cj[:nnz], cx[:nnz]


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
    num_threads: int = 0,
) -> sp.csr_matrix:
    """Row-wise k-nearest-neighbour similarity between the rows of ``entities``.

    Returns an ``n x n`` CSR matrix ``W`` where row ``t`` holds the (at most) ``k`` most similar
    other rows ``s`` with ``W[t, s] = sim(t, s) > min_similarity``; the diagonal is always empty.
    Ties at the k-th place keep the lower index.

    ``similarity``:
      * ``cosine`` - ``dot(a, b) / (|a| |b| + shrinkage)``;
      * ``tfidf`` - the same cosine on TF-IDF weighted rows (rare columns count more);
      * ``bm25`` - raw dot product of BM25 weighted rows (as ``implicit``'s BM25Recommender);
        ``shrinkage`` is ignored because BM25's length normalisation already damps long rows.

    How it stays fast and bounded (the similarity is symmetric, so each pair is computed once):

    * rows are relabelled by popularity and cut into blocks of at most ``block_size`` rows
      (fewer for very wide data, so a block's dense buffer stays ≤ 128 MiB);
    * block ``[s, e)`` computes ``S[s:, s:e]`` (the rows from ``s`` on against the block) as
      one dense buffer with scipy's compiled sparse kernel;
    * its columns give the block rows' top ``k`` among rows ``≥ s``; its rows ``≥ e`` give the
      later rows' candidates among the block, folded into running top-``k`` lists, which
      already hold everything from the earlier blocks;
    * blocks run on ``num_threads`` threads (0: every core this process may use; the kernels
      release the GIL) and are folded in block order, so the result does not depend on
      thread timing.
    """
    if block_size <= 0:
        raise ValueError(f"block_size must be a positive integer, got {block_size}")
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    e = sp.csr_matrix(entities)
    if similarity == "bm25":
        e = bm25_weight(e, bm25_k1, bm25_b)
    elif similarity == "tfidf":
        e = tfidf_weight(e)
    elif similarity != "cosine":
        raise ValueError(f"similarity must be one of 'cosine', 'bm25', 'tfidf', got {similarity!r}")
    n = e.shape[0]
    if n == 0:
        return sp.csr_matrix((0, 0), dtype=np.float32)
    # Popular rows first: the first block then hands every row strong early candidates,
    # which raises the running thresholds that prune all later blocks' candidates.
    perm = np.argsort(-np.diff(e.indptr), kind="stable")
    e = e[perm]  # a new matrix: the in-place clean-up below never touches the caller's
    if e.dtype != np.float32:
        e = e.astype(np.float32)
    e.sum_duplicates()
    e.sort_indices()
    lengths = np.diff(e.indptr)
    if e.nnz and bool(np.all(e.data == 1.0)):
        norms = np.sqrt(lengths.astype(np.float64))  # binary rows: no squares to sum
    elif e.nnz:
        sq = np.add.reduceat(
            e.data * e.data, np.minimum(e.indptr[:-1], e.nnz - 1), dtype=np.float64
        )
        norms = np.sqrt(np.where(lengths > 0, sq, 0.0))
    else:
        norms = np.zeros(n, dtype=np.float64)
    normalise = similarity in ("cosine", "tfidf")
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0).astype(np.float32)
    norms32 = norms.astype(np.float32)
    floor = float(min_similarity)
    bs = max(1, min(block_size, max(64, (1 << 25) // n)))
    bounds = [(s, min(s + bs, n)) for s in range(0, n, bs)]

    local = threading.local()
    running = RunningTopK(n, k, perm, floor)

    def block(b: int) -> tuple[np.ndarray, ...]:
        s, t = bounds[b]
        width, rows = t - s, n - s
        buf = getattr(local, "buf", None)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != bs:
            buf = local.buf = np.empty((n, bs), dtype=np.float32)
        d = buf[:rows, :width] if width == bs else np.empty((rows, width), np.float32)
        sparse_product_into(e, s, e[s:t].T.tocsr(), d)
        if normalise:
            step = max(1, (1 << 22) // width)
            for r0 in range(0, rows, step):
                r1 = min(rows, r0 + step)
                # One factor per pair, built commutatively (a*b == b*a in floats), so that a
                # pair computed in either orientation gets bit-identical similarity.
                if shrinkage == 0:
                    d[r0:r1] *= inv[s + r0 : s + r1, None] * inv[None, s:t]
                else:
                    denom = norms32[s + r0 : s + r1, None] * norms32[None, s:t] + np.float32(
                        shrinkage
                    )
                    np.divide(d[r0:r1], denom, out=d[r0:r1], where=denom > 0)
        d[np.arange(width), np.arange(width)] = -np.inf  # never one's own neighbour
        # Block rows: their best k among rows ≥ s (the columns of d).
        col_pos, col_val = column_top_k(d, k, perm[s:], floor, running.tau[s:t].copy())
        col_rows, col_idx, col_v = flat_entries(col_pos, col_val, np.arange(s, t))
        # Later rows: their candidates among the block's rows (the rows of d below it).
        r, c, v = row_candidates(d[width:], k, perm[s:t], floor, running.tau[t:].copy())
        return col_rows, col_idx + s, col_v, r + t, c + s, v

    threads = resolve_threads(num_threads)
    final_idx = np.full((n, k), -1, dtype=np.int64)
    final_val = np.full((n, k), -np.inf, dtype=np.float32)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        # A bounded window of blocks in flight keeps memory at ~threads dense buffers.
        pending = {b: pool.submit(block, b) for b in range(min(len(bounds), threads + 1))}
        for b, (s, t) in enumerate(bounds):
            col_rows, col_idx, col_v, later, later_idx, later_v = pending.pop(b).result()
            nxt = b + threads + 1
            if nxt < len(bounds):
                pending[nxt] = pool.submit(block, nxt)
            running.add(col_rows, col_idx, col_v)
            final_idx[s:t], final_val[s:t] = running.result(np.arange(s, t))
            running.add(later, later_idx, later_v)
    keep = final_idx >= 0
    rows = np.broadcast_to(np.arange(n)[:, None], keep.shape)[keep]
    out = sp.csr_matrix(
        (final_val[keep], (perm[rows], perm[final_idx[keep]])), shape=(n, n), dtype=np.float32
    )
    out.sort_indices()
    return out


def knn_for_config(entities: sp.csr_matrix, cfg: KNNConfig, num_threads: int = 0) -> sp.csr_matrix:
    """:func:`knn_similarity` between the rows of ``entities`` with a KNN model's settings."""
    return knn_similarity(
        entities,
        k=cfg.k,
        similarity=cfg.similarity,
        shrinkage=cfg.shrinkage,
        min_similarity=cfg.min_similarity,
        block_size=cfg.block_size,
        bm25_k1=cfg.bm25_k1,
        bm25_b=cfg.bm25_b,
        num_threads=num_threads,
    )


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
