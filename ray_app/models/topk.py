"""Top-k selection: per row (dense or CSR), exact ties, with cheap candidate filters.

Every selector breaks ties exactly (by a caller-given key, or the lower index), so results never
depend on how rows were blocked or on thread timing.
"""

from __future__ import annotations

import numpy as np


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest values per row, sorted best first (ties: lower index)."""
    n = scores.shape[1]
    k = min(k, n)
    if k == n:
        part = np.broadcast_to(np.arange(n), scores.shape).copy()
    else:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        # argpartition picks any of the values tied with the k-th; rows where such a tie
        # crosses the cut take the lower indices from a stable sort instead
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
        tied = np.flatnonzero((scores >= kth[:, None]).sum(axis=1) > k)
        if tied.size:
            part[tied] = np.argsort(-scores[tied], axis=1, kind="stable")[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    # lexsort: primary key descending score, secondary ascending index, for determinism
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


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


class RunningTopK:
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


def flat_entries(pos: np.ndarray, val: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """(row, position, value) of the valid entries of padded per-row results."""
    ok = pos >= 0
    return np.repeat(rows, ok.sum(axis=1)), pos[ok], val[ok]


def row_candidates(
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
    mr, mc, mv = flat_entries(pos, val, many)
    if fr.size == 0:
        return mr, mc, mv
    rows = np.concatenate([fr, mr])
    order = np.argsort(rows, kind="stable")
    return rows[order], np.concatenate([fc, mc])[order], np.concatenate([d[fr, fc], mv])[order]


def column_top_k(
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
