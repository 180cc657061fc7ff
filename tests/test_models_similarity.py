"""The blocked, symmetric, threaded k-NN kernel and the top-k selectors against dense
brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import ray_app.models.knn as knn
from ray_app.models.knn import knn_similarity
from ray_app.models.topk import top_k_exact, top_k_indices


def reference(x: np.ndarray, k: int, shrinkage: float = 0.0, floor: float = 0.0) -> np.ndarray:
    """Dense cosine top-k, computed the way the kernel rounds (float32 pair factors), with the
    documented tie rule: larger similarity first, then the lower index."""
    x32 = x.astype(np.float32)
    raw = x32 @ x32.T
    norms = np.sqrt((x.astype(np.float64) ** 2).sum(axis=1))
    if shrinkage == 0:
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0).astype(np.float32)
        cos = raw * (inv[:, None] * inv[None, :])
    else:
        n32 = norms.astype(np.float32)
        denom = n32[:, None] * n32[None, :] + np.float32(shrinkage)
        cos = np.divide(raw, denom, out=np.zeros_like(raw), where=denom > 0)
    n = len(x)
    out = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        cand = [j for j in range(n) if j != i and cos[i, j] > floor]
        cand.sort(key=lambda j: (-cos[i, j], j))
        out[i, cand[:k]] = cos[i, cand[:k]]
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 25])
def test_binary_cosine_matches_reference_exactly(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    # Skewed column popularity and few distinct values: plenty of ties at the k-th place.
    x = (rng.random((45, 70)) < rng.uniform(0.02, 0.4, size=70)).astype(np.float32)
    want = reference(x, k)
    for block_size, threads in ((1000, 1), (7, 2), (1, 2)):
        got = knn_similarity(sp.csr_matrix(x), k=k, block_size=block_size, num_threads=threads)
        np.testing.assert_array_equal(got.toarray() != 0, want != 0)
        np.testing.assert_allclose(got.toarray(), want, rtol=1e-6)


def test_shrinkage_and_floor_match_reference() -> None:
    rng = np.random.default_rng(5)
    x = (rng.random((40, 60)) < 0.2).astype(np.float32)
    want = reference(x, 6, shrinkage=2.0, floor=0.1)
    got = knn_similarity(
        sp.csr_matrix(x), k=6, shrinkage=2.0, min_similarity=0.1, block_size=9, num_threads=2
    )
    np.testing.assert_allclose(got.toarray(), want, rtol=1e-6)


def test_weighted_rows_match_reference() -> None:
    rng = np.random.default_rng(9)
    x = np.where(rng.random((30, 50)) < 0.3, rng.random((30, 50)) * 5, 0.0).astype(np.float32)
    got = knn_similarity(sp.csr_matrix(x), k=4, block_size=4, num_threads=2)
    np.testing.assert_allclose(got.toarray(), reference(x, 4), rtol=1e-5, atol=1e-7)


def test_public_fallback_without_private_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    x = sp.csr_matrix((rng.random((50, 80)) < 0.15).astype(np.float32))
    fast = knn_similarity(x, k=5, block_size=8)
    monkeypatch.setattr(knn, "_st", None)
    assert (knn_similarity(x, k=5, block_size=8) != fast).nnz == 0


def test_top_k_exact_breaks_ties_by_key() -> None:
    vals = np.array([[1.0, 3.0, 2.0, 2.0, 2.0, 0.0]], dtype=np.float32)
    pos, val = top_k_exact(vals, 3, np.array([5, 0, 4, 1, 3, 2]), floor=0.0)
    assert sorted(pos[0].tolist()) == [1, 3, 4]  # 3.0, then the two 2.0s with keys 1 and 3
    pos, val = top_k_exact(vals, 5, np.arange(6), floor=1.5)
    assert sorted(pos[0][pos[0] >= 0].tolist()) == [1, 2, 3, 4] and val[0].min() == -np.inf


@pytest.mark.parametrize("exclude_seen", [True, False])
@pytest.mark.parametrize("shape", [(70, 40), (300, 600)])
def test_itemknn_fast_ranking_equals_the_generic_one(
    exclude_seen: bool, shape: tuple[int, int]
) -> None:
    import pandas as pd

    from ray_app.models.base import Interactions, Recommender
    from ray_app.models.itemknn import ItemKNN, ItemKNNConfig

    rng = np.random.default_rng(8)
    n_users, n_items = shape
    dense = (rng.random(shape) < rng.uniform(0.01, 0.2, size=n_items)).astype(np.float32)
    dense[3] = 0  # no history: cannot be ranked
    dense[4] = 0
    dense[4, :2] = 1  # tiny history: few scored items, the rest are zero-score fills
    m = sp.csr_matrix(dense)
    m[5, 7] = 0.0  # an explicit zero weight is still a seen item
    inter = Interactions(
        pd.Index([f"u{i}" for i in range(n_users)]),
        pd.Index([f"i{i}" for i in range(n_items)]),
        sp.csr_matrix(m),
    )
    model = ItemKNN(ItemKNNConfig(k=5, num_threads=2)).fit(inter)
    users = np.array([5, 3, 4, 0, n_users - 1, 5, 12, *range(20, 60)])
    scores = model.score_users(users).astype(np.float64)
    if exclude_seen:
        for row, u in enumerate(users):
            scores[row, inter.matrix[u].indices] = -np.inf
    for k, batch in ((3, 2), (10, 1024), (n_items + 5, 7)):
        fast = model.rank_items(users, k, exclude_seen, batch_size=batch)
        slow = Recommender.rank_items(model, users, k, exclude_seen, batch_size=batch)
        # Same scores as the generic path; the generic path may pick any of the items tied at
        # the k-th place, the fast one keeps the lowest indices, as an exact sort would.
        np.testing.assert_array_equal(fast[1], slow[1])
        for row, ok in enumerate(model.can_score(users)):
            if not ok:  # no history (user 3, and any empty random row)
                assert (fast[0][row] == -1).all()
                continue
            order = np.lexsort((np.arange(n_items), -scores[row]))
            want = order[np.isfinite(scores[row, order])][:k]
            np.testing.assert_array_equal(fast[0][row][: len(want)], want)


def test_wide_rows_take_the_candidate_path_and_stay_exact() -> None:
    rng = np.random.default_rng(11)
    # Few distinct values, wide rows: the group-maximum prefilter runs and ties abound.
    vals = rng.integers(0, 6, size=(40, 3000)).astype(np.float32)
    vals[::7] = 0.0  # rows with almost nothing above the floor
    vals[::7, :2] = 1.0
    keys = rng.permutation(3000)
    for k in (1, 5):
        pos, _ = top_k_exact(vals, k, keys, floor=0.0, lower=None)
        for r in range(len(vals)):
            cand = [j for j in range(3000) if vals[r, j] > 0]
            cand.sort(key=lambda j: (-vals[r, j], keys[j]))
            assert sorted(pos[r][pos[r] >= 0].tolist()) == sorted(cand[:k])


def test_many_rows_knn_matches_reference() -> None:
    rng = np.random.default_rng(12)
    x = (rng.random((600, 40)) < rng.uniform(0.02, 0.3, size=40)).astype(np.float32)
    got = knn_similarity(sp.csr_matrix(x), k=2, block_size=64, num_threads=2)
    np.testing.assert_allclose(got.toarray(), reference(x, 2), rtol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_top_k_indices_breaks_ties_at_the_cut_by_lower_index(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(50, 40)).astype(np.float32)  # many ties at every cut
    for k in (1, 5, 17, 39):
        got = top_k_indices(scores, k)
        want = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(got, want)
