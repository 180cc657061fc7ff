"""Sparse building blocks shared by the neighbourhood models (item-KNN, user-KNN).

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

_st: Any
try:  # scipy's compiled sparse kernels; private, so there is a public fallback
    from scipy.sparse import _sparsetools

    _st = _sparsetools
except ImportError:  # pragma: no cover - scipy reorganised
    _st = None

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
    result, which skips the symbolic pass (about 40 % of ``a @ y``'s time) because the upper
    bound is known. Rows go ``chunk_entries / width`` at a time so the buffers stay small.
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


def segment_top_k(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, k: int, group: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Per CSR row, the ``k`` entries with the largest *positive* values, best first (ties:
    smaller column index first); ``(columns, values)`` padded with -1 / -inf.

    Works on the sparse entries only: each row's entries are cut into ``group``-long runs,
    the k-th largest run maximum bounds the k-th largest value from below, and only the
    entries at or above it are selected exactly.
    """
    rows = len(indptr) - 1
    cols = np.full((rows, k), -1, dtype=np.int64)
    vals = np.full((rows, k), -np.inf, dtype=np.float32)
    if rows == 0 or len(data) == 0:
        return cols, vals
    v = np.where(data > 0, data, np.float32(-np.inf)).astype(np.float32, copy=False)
    lengths = np.diff(indptr).astype(np.int64)
    ng = -(-lengths // group)
    first_group = np.cumsum(ng) - ng
    g_row = np.repeat(np.arange(rows), ng)
    g_slot = np.arange(int(ng.sum())) - first_group[g_row]
    starts = indptr[:-1].astype(np.int64)[g_row] + group * g_slot
    gmax = np.maximum.reduceat(v, starts)
    thr = np.full(rows, -np.inf, dtype=np.float32)
    wide = np.flatnonzero(ng >= k)  # shorter rows: every positive entry is a candidate
    if wide.size:
        width = int(ng[wide].max())
        at = np.full(rows, -1, dtype=np.int64)
        at[wide] = np.arange(len(wide))
        sel = at[g_row] >= 0
        table = np.full((len(wide), width), -np.inf, dtype=np.float32)
        table[at[g_row[sel]], g_slot[sel]] = gmax[sel]
        thr[wide] = np.partition(table, width - k, axis=1)[:, width - k]
    e_row = np.repeat(np.arange(rows), lengths)
    keep = np.flatnonzero((v >= thr[e_row]) & (v > -np.inf))
    r = e_row[keep]
    per_row = np.bincount(r, minlength=rows)
    cap = max(k + 1, int(per_row.max(initial=0)))
    slot = np.arange(len(keep)) - (np.cumsum(per_row) - per_row)[r]
    cand_v = np.full((rows, cap), -np.inf, dtype=np.float32)
    cand_c = np.full((rows, cap), -1, dtype=np.int64)
    cand_v[r, slot] = v[keep]
    cand_c[r, slot] = indices[keep]
    keys = np.where(cand_c >= 0, cand_c, np.iinfo(np.int64).max)  # ties: lower column first
    pos, top = _exact_rows(cand_v, k, keys, -np.inf)
    got = np.take_along_axis(cand_c, pos, axis=1)
    got = np.where(top > -np.inf, got, -1)
    order = np.lexsort((np.where(got >= 0, got, np.iinfo(np.int64).max), -top), axis=1)
    return np.take_along_axis(got, order, axis=1), np.take_along_axis(top, order, axis=1)


def _exact_rows(
    v: np.ndarray, k: int, keys: np.ndarray, floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """Core of :func:`top_k_exact` for ``w > k`` columns (``keys``: per column or per entry)."""
    w = v.shape[1]
    part = np.argpartition(v, w - k - 1, axis=1)[:, w - k - 1 :]
    pv = np.take_along_axis(v, part, axis=1)
    top_pos, top_val = part[:, 1:], pv[:, 1:]
    tau = top_val.min(axis=1)
    amb = np.flatnonzero((pv[:, 0] == tau) & (tau > floor))
    if amb.size:
        # The k-th and (k+1)-th values tie: keep everything above the tie, then the tied
        # entries with the smallest keys.
        va, ta = v[amb], tau[amb][:, None]
        above, at = va > ta, va == ta
        need = k - above.sum(axis=1)
        kk = keys[None, :] if keys.ndim == 1 else keys[amb]
        order = np.argsort(np.broadcast_to(kk, at.shape), axis=1, kind="stable")
        ranked = np.cumsum(np.take_along_axis(at, order, axis=1), axis=1)
        rank = np.empty_like(ranked)
        np.put_along_axis(rank, order, ranked, axis=1)
        chosen = above | (at & (rank <= need[:, None]))
        sel = np.nonzero(chosen)[1].reshape(len(amb), k)
        top_pos[amb] = sel
        top_val[amb] = np.take_along_axis(va, sel, axis=1)
    return top_pos, top_val


def _gather_rows(mask: np.ndarray, vals: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's masked entries packed left into ``width`` columns (positions, values);
    padding is position -1, value -inf. Every row must have at most ``width`` entries."""
    r, c = np.nonzero(mask)
    starts = np.searchsorted(r, np.arange(mask.shape[0]))
    slot = np.arange(len(r)) - starts[r]
    pos = np.full((mask.shape[0], width), -1, dtype=np.int64)
    val = np.full((mask.shape[0], width), -np.inf, dtype=np.float32)
    pos[r, slot] = c
    val[r, slot] = vals[r, c]
    return pos, val


_GROUP = 32


def top_k_exact(
    vals: np.ndarray,
    k: int,
    keys: np.ndarray,
    floor: float,
    lower: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the positions and values of the ``k`` largest entries above ``floor``.

    Ties are broken exactly by the smaller ``keys`` value (``keys``: one per column, or one
    per entry), so that the selected *set* never depends on how rows were blocked. Rows with
    fewer than ``k`` entries above ``floor`` are padded with position ``-1`` and ``-inf``.
    ``lower`` (one per row) allows entries below it to be left out, for callers that will
    reject them anyway.

    Wide rows are first narrowed to candidates: the k-th largest of the maxima of
    (up to ``_GROUP``-column) groups is a lower bound on the k-th largest value, so only
    entries at or above it can be in the top k (typically ~k of them instead of ``w``). Then
    ``argpartition`` finds the k+1 largest, and only rows whose k-th and (k+1)-th values tie
    go through the exact (slower) tie rule.
    """
    m, w = vals.shape
    pos = np.full((m, k), -1, dtype=np.int64)
    val = np.full((m, k), -np.inf, dtype=np.float32)
    if m == 0 or w == 0:
        return pos, val
    if w <= k:
        pos[:, :w] = np.arange(w)
        val[:, :w] = vals
    else:
        step = max(1, (1 << 22) // w)
        for r0 in range(0, m, step):
            r1 = min(m, r0 + step)
            v = vals[r0:r1]
            rk = keys if keys.ndim == 1 else keys[r0:r1]
            group = min(_GROUP, w // (4 * k))
            if group >= 2 and keys.ndim == 1:
                ng = w // group  # ≥ 4k groups: the k-th largest maximum is a tight bound
                gmax = v[:, : ng * group].reshape(r1 - r0, ng, group).max(axis=2)
                thr = np.partition(gmax, ng - k, axis=1)[:, ng - k]
                if lower is not None:
                    thr = np.maximum(thr, lower[r0:r1])
                mask = (v >= thr[:, None]) & (v > floor)
                counts = mask.sum(axis=1)
                # Gather unless ties at the threshold leave a row with a large share of w.
                few = counts <= w // 4
                if few.any():
                    fi = np.flatnonzero(few)
                    cap = max(k + 1, int(counts[fi].max()))
                    every = fi.size == r1 - r0
                    cpos, cval = _gather_rows(
                        mask if every else mask[fi], v if every else v[fi], cap
                    )
                    ckeys = np.where(cpos >= 0, keys[np.maximum(cpos, 0)], np.iinfo(np.int64).max)
                    p2, v2 = _exact_rows(cval, k, ckeys, floor)
                    pos[r0 + fi] = np.take_along_axis(cpos, p2, axis=1)
                    val[r0 + fi] = v2
                rest = np.flatnonzero(~few)
                if rest.size:
                    p2, v2 = _exact_rows(v[rest], k, rk, floor)
                    pos[r0 + rest] = p2
                    val[r0 + rest] = v2
            else:
                p2, v2 = _exact_rows(v, k, rk, floor)
                pos[r0:r1] = p2
                val[r0:r1] = v2
    bad = ~(val > floor)
    pos[bad] = -1
    val[bad] = -np.inf
    return pos, val


def _above(threshold: np.ndarray, floor: float) -> np.ndarray:
    """Per-row bound ``b`` with ``v >= b`` ⟺ ``v >= threshold and v > floor`` (float32)."""
    first = np.nextafter(np.float32(floor), np.float32(np.inf))
    return np.maximum(threshold.astype(np.float32, copy=False), first)


def _keys_or_max(idx: np.ndarray, key: np.ndarray) -> np.ndarray:
    return np.where(idx >= 0, key[np.maximum(idx, 0)], np.iinfo(np.int64).max)


class _RunningTopK:
    """Per-row candidate buffers of width ``2k`` that are compacted to the exact top ``k``
    only when they overflow, so each candidate is selected O(1) times instead of once per
    block. ``tau[r]`` is row ``r``'s k-th best value at its last compaction (−inf before):
    a lower bound that only rises, so a stale read is still a safe filter."""

    def __init__(self, n: int, k: int, key: np.ndarray, floor: float) -> None:
        self.k, self.key, self.floor = k, key, floor
        self.val = np.full((n, 2 * k), -np.inf, dtype=np.float32)
        self.idx = np.full((n, 2 * k), -1, dtype=np.int64)
        self.fill = np.zeros(n, dtype=np.int64)
        self.tau = np.full(n, -np.inf, dtype=np.float32)

    def compact(self, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        v, i = self.val[rows], self.idx[rows]
        pos, val = top_k_exact(v, self.k, _keys_or_max(i, self.key), self.floor)
        got = np.where(pos >= 0, np.take_along_axis(i, np.maximum(pos, 0), axis=1), -1)
        self.val[rows] = -np.inf
        self.idx[rows] = -1
        self.val[rows, : self.k] = val
        self.idx[rows, : self.k] = got
        self.fill[rows] = (got >= 0).sum(axis=1)
        full = self.fill[rows] == self.k
        self.tau[rows[full]] = val[full].min(axis=1)

    def add(self, rows: np.ndarray, idx: np.ndarray, val: np.ndarray) -> None:
        """Append flat candidates (``rows`` ascending, at most ``k`` per row)."""
        if rows.size == 0:
            return
        # rows is sorted: run boundaries instead of np.unique's sort.
        start = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
        uniq = rows[start]
        count = np.diff(np.append(start, len(rows)))
        over = uniq[self.fill[uniq] + count > 2 * self.k]
        self.compact(over)
        slot = self.fill[rows] + (np.arange(len(rows)) - np.repeat(start, count))
        self.val[rows, slot] = val
        self.idx[rows, slot] = idx
        self.fill[uniq] += count

    def result(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Final (indices, values) for ``rows`` (k per row, -1 / -inf padded)."""
        self.compact(rows)
        return self.idx[rows, : self.k], self.val[rows, : self.k]


def _flat(pos: np.ndarray, val: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """(row, position, value) of the valid entries of padded per-row results."""
    ok = pos >= 0
    return np.repeat(rows, ok.sum(axis=1)), pos[ok], val[ok]


def _row_candidates(
    d: np.ndarray, k: int, keys: np.ndarray, floor: float, tau: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat (row, column, value) of the entries of each row of ``d`` that can still enter the
    row's running top-k (``≥ tau``, ``> floor``), at most the best ``k`` per row."""
    mask = d >= _above(tau, floor)[:, None]
    counts = mask.sum(axis=1)
    many = np.flatnonzero(counts > k)
    if many.size == 0:
        r, c = np.nonzero(mask)
        return r, c, d[r, c]
    mask[many] = False  # those rows go through top_k_exact instead
    fr, fc = np.nonzero(mask)
    pos, val = top_k_exact(d if many.size == d.shape[0] else d[many], k, keys, floor)
    mr, mc, mv = _flat(pos, val, many)
    if fr.size == 0:
        return mr, mc, mv
    rows = np.concatenate([fr, mr])
    order = np.argsort(rows, kind="stable")
    return rows[order], np.concatenate([fc, mc])[order], np.concatenate([d[fr, fc], mv])[order]


def _column_top_k(
    d: np.ndarray, k: int, keys: np.ndarray, floor: float, lower: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k_exact` of every *column* of ``d`` without transposing it.

    Group maxima are taken down the rows (a contiguous reduction), giving each column a
    threshold; the few entries at or above it are gathered per column and selected exactly.
    """
    rows, width = d.shape
    group = min(_GROUP, rows // (4 * k))
    if group < 2:
        pos = np.empty((width, k), np.int64)
        val = np.empty((width, k), np.float32)
        for c0 in range(0, width, 64):
            c1 = min(width, c0 + 64)
            pos[c0:c1], val[c0:c1] = top_k_exact(
                np.ascontiguousarray(d[:, c0:c1].T), k, keys, floor, lower[c0:c1]
            )
        return pos, val
    ng = rows // group
    gmax = d[: ng * group].reshape(ng, group, width).max(axis=1)
    thr = np.partition(gmax, ng - k, axis=0)[ng - k]
    mask = d >= _above(np.maximum(thr, lower), floor)[None, :]
    r, c = np.nonzero(mask)
    counts = np.bincount(c, minlength=width)
    order = np.argsort(c, kind="stable")
    r, c = r[order], c[order]
    pos = np.full((width, k), -1, np.int64)
    val = np.full((width, k), -np.inf, np.float32)
    crowded = counts > max(rows // 4, k)
    fine = np.flatnonzero(~crowded)
    if fine.size:
        cap = max(k + 1, int(counts[fine].max(initial=0)))
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        sel = ~crowded[c]
        rr, cc = r[sel], c[sel]
        slot = np.arange(len(c))[sel] - starts[cc]
        cand_pos = np.full((width, cap), -1, np.int64)
        cand_val = np.full((width, cap), -np.inf, np.float32)
        cand_pos[cc, slot] = rr
        cand_val[cc, slot] = d[rr, cc]
        cand_pos, cand_val = cand_pos[fine], cand_val[fine]
        p2, v2 = _exact_rows(cand_val, k, _keys_or_max(cand_pos, keys), floor)
        pos[fine] = np.take_along_axis(cand_pos, p2, axis=1)
        val[fine] = v2
    for col in np.flatnonzero(crowded):  # ties flooded the threshold: the plain way
        p2, v2 = top_k_exact(np.ascontiguousarray(d[:, col][None, :]), k, keys, floor)
        pos[col], val[col] = p2[0], v2[0]
    bad = ~(val > floor)
    pos[bad] = -1
    val[bad] = -np.inf
    return pos, val


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
    running = _RunningTopK(n, k, perm, floor)

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
        col_pos, col_val = _column_top_k(d, k, perm[s:], floor, running.tau[s:t].copy())
        col_rows, col_idx, col_v = _flat(col_pos, col_val, np.arange(s, t))
        # Later rows: their candidates among the block's rows (the rows of d below it).
        r, c, v = _row_candidates(d[width:], k, perm[s:t], floor, running.tau[t:].copy())
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
    run_idx, run_val = final_idx, final_val
    keep = run_idx >= 0
    rows = np.broadcast_to(np.arange(n)[:, None], keep.shape)[keep]
    out = sp.csr_matrix(
        (run_val[keep], (perm[rows], perm[run_idx[keep]])), shape=(n, n), dtype=np.float32
    )
    out.sort_indices()
    return out


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
