"""Ranking metrics: hand-computed cases and Hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_app.evaluation import metrics as M

FAST = settings(max_examples=60, deadline=None)


# ---- hand-computed cases ------------------------------------------------------------------
def test_single_user_by_hand() -> None:
    # List [1, 2, 3], relevant {2, 7}: one hit at rank 2.
    rec = np.array([[1, 2, 3]])
    truth = [{2, 7}]
    assert M.hit_at_k(rec, truth, 3)[0] == 1.0
    assert M.precision_at_k(rec, truth, 3)[0] == pytest.approx(1 / 3)
    assert M.recall_at_k(rec, truth, 3)[0] == pytest.approx(1 / 2)  # 1 / min(3, 2)
    assert M.mrr_at_k(rec, truth, 3)[0] == pytest.approx(1 / 2)
    # DCG = 1/log2(3); IDCG = 1/log2(2) + 1/log2(3) (two relevant items fit in 3 slots)
    idcg = 1.0 + 1 / math.log2(3)
    assert M.ndcg_at_k(rec, truth, 3)[0] == pytest.approx((1 / math.log2(3)) / idcg)
    # At k=1 the hit is cut off.
    assert M.ndcg_at_k(rec, truth, 1)[0] == 0.0
    assert M.mrr_at_k(rec, truth, 1)[0] == 0.0


def test_recall_denominator_is_truncated_by_default() -> None:
    # 5 relevant items, 2 slots, both hits: truncated recall 2/min(2,5) = 1, classic 2/5.
    rec = np.array([[0, 1]])
    truth = [{0, 1, 2, 3, 4}]
    assert M.recall_at_k(rec, truth, 2)[0] == 1.0
    assert M.recall_at_k(rec, truth, 2, truncated=False)[0] == pytest.approx(0.4)


def test_padding_and_empty_truth() -> None:
    # User 0: list padded with -1 (never a hit); user 1: no relevant items -> nan.
    rec = np.array([[4, -1, -1], [0, 1, 2]])
    truth = [{4, 9}, set()]
    ndcg = M.ndcg_at_k(rec, truth, 3)
    assert ndcg[0] == pytest.approx(1.0 / (1.0 + 1 / math.log2(3)))
    assert math.isnan(ndcg[1])
    # Precision still divides by k, so the short list is penalised.
    assert M.precision_at_k(rec, truth, 3)[0] == pytest.approx(1 / 3)


def test_sparse_truth_equals_sets() -> None:
    rec = np.array([[0, 1, 2], [2, 1, 0]])
    sets = [{1}, {0, 2}]
    mat = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1]]))
    for fn in (M.ndcg_at_k, M.recall_at_k, M.precision_at_k, M.mrr_at_k, M.hit_at_k):
        np.testing.assert_allclose(fn(rec, sets, 3), fn(rec, mat, 3))


def test_shape_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="align them by user"):
        M.ndcg_at_k(np.array([[0, 1]]), [{0}, {1}], 2)
    with pytest.raises(ValueError, match="2-D"):
        M.ndcg_at_k(np.array([0, 1]), [{0}], 2)
    with pytest.raises(ValueError, match="k must be"):
        M.ndcg_at_k(np.array([[0, 1]]), [{0}], 0)


def test_coverage_gini_novelty_by_hand() -> None:
    rec = np.array([[0, 1], [0, 2], [0, -1]])
    assert M.catalog_coverage(rec, n_items=6) == pytest.approx(3 / 6)
    assert M.catalog_coverage(rec, n_items=6, k=1) == pytest.approx(1 / 6)
    # Exposure over 4 items: [3, 1, 1, 0] -> sorted [0, 1, 1, 3], total 5
    # Gini = 2 * (1*0 + 2*1 + 3*1 + 4*3) / (4 * 5) - (4 + 1) / 4 = 34/20 - 5/4 = 0.45
    assert M.exposure_gini(rec, n_items=4) == pytest.approx(0.45)
    assert M.exposure_gini(np.array([[0, 1], [2, 3]]), n_items=4) == pytest.approx(0.0)
    # Popularity [3, 0] of 3 users: p = (3+1)/4 = 1 -> 0 bits; p = 1/4 -> 2 bits.
    nov = M.novelty(np.array([[0, 1], [1, -1], [-1, -1]]), np.array([3.0, 0.0]), n_users=3)
    np.testing.assert_allclose(nov[:2], [1.0, 2.0])
    assert math.isnan(nov[2])


def test_intra_list_diversity_by_hand() -> None:
    # Items 0 and 1 share a genre (cos 1 -> distance 0); item 2 is orthogonal (distance 1).
    feats = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    ild = M.intra_list_diversity(np.array([[0, 1, -1], [0, 1, 2], [2, -1, -1]]), feats)
    # List [0, 1, 2]: pairs (0,1)=0, (0,2)=1, (1,2)=1 -> mean 2/3.
    np.testing.assert_allclose(ild[:2], [0.0, 2 / 3])
    assert math.isnan(ild[2])


# ---- properties ---------------------------------------------------------------------------
@st.composite
def ranking_case(draw: st.DrawFn) -> tuple[np.ndarray, list[set[int]], int, int]:
    n_items = draw(st.integers(1, 25))
    n_users = draw(st.integers(1, 6))
    length = draw(st.integers(1, n_items))
    rows, truth = [], []
    for _ in range(n_users):
        perm = draw(st.permutations(range(n_items)))
        short = draw(st.integers(0, length))
        rows.append(list(perm[:short]) + [-1] * (length - short))
        truth.append(set(draw(st.sets(st.integers(0, n_items - 1), min_size=1))))
    k = draw(st.integers(1, length + 2))
    return np.array(rows, dtype=np.int64), truth, k, n_items


@FAST
@given(ranking_case())
def test_accuracy_metrics_in_unit_interval(
    case: tuple[np.ndarray, list[set[int]], int, int],
) -> None:
    rec, truth, k, _ = case
    for fn in (M.ndcg_at_k, M.recall_at_k, M.precision_at_k, M.mrr_at_k, M.hit_at_k):
        vals = fn(rec, truth, k)
        assert vals.shape == (len(rec),)
        assert ((vals >= 0) & (vals <= 1 + 1e-12)).all(), fn.__name__


@FAST
@given(ranking_case())
def test_metric_relations(case: tuple[np.ndarray, list[set[int]], int, int]) -> None:
    rec, truth, k, _ = case
    hit = M.hit_at_k(rec, truth, k)
    # Any positive metric implies a hit, and a hit implies every metric is positive.
    for fn in (M.ndcg_at_k, M.recall_at_k, M.precision_at_k, M.mrr_at_k):
        np.testing.assert_array_equal(fn(rec, truth, k) > 0, hit > 0)
    assert (M.mrr_at_k(rec, truth, k) <= hit).all()


@FAST
@given(ranking_case())
def test_perfect_ranking_scores_one(case: tuple[np.ndarray, list[set[int]], int, int]) -> None:
    _, truth, k, n_items = case
    perfect = np.array(
        [sorted(t) + [i for i in range(n_items) if i not in t] for t in truth], dtype=np.int64
    )
    np.testing.assert_allclose(M.ndcg_at_k(perfect, truth, k), 1.0)
    np.testing.assert_allclose(M.recall_at_k(perfect, truth, k), 1.0)
    np.testing.assert_allclose(M.mrr_at_k(perfect, truth, k), 1.0)
    sizes = np.array([len(t) for t in truth])
    np.testing.assert_allclose(M.precision_at_k(perfect, truth, k), np.minimum(sizes, k) / k)


@FAST
@given(ranking_case(), st.data())
def test_ndcg_rises_when_a_hit_moves_up(
    case: tuple[np.ndarray, list[set[int]], int, int], data: st.DataObject
) -> None:
    rec, truth, _, _ = case
    row, t = rec[:1].copy(), truth[:1]
    hits = [j for j, i in enumerate(row[0]) if i in t[0]]
    misses = [j for j, i in enumerate(row[0]) if i not in t[0]]
    if not hits or not misses or min(misses) > max(hits):
        return
    j = data.draw(st.sampled_from([h for h in hits if h > min(misses)]))
    i = data.draw(st.sampled_from([m for m in misses if m < j]))
    k = row.shape[1]
    before = M.ndcg_at_k(row, t, k)[0]
    row[0, [i, j]] = row[0, [j, i]]
    assert M.ndcg_at_k(row, t, k)[0] > before


@FAST
@given(ranking_case())
def test_untruncated_recall_monotone_in_k(
    case: tuple[np.ndarray, list[set[int]], int, int],
) -> None:
    rec, truth, _, _ = case
    prev = np.zeros(len(rec))
    for k in range(1, rec.shape[1] + 1):
        cur = M.recall_at_k(rec, truth, k, truncated=False)
        assert (cur >= prev - 1e-12).all()
        prev = cur


@FAST
@given(ranking_case())
def test_beyond_accuracy_bounds(case: tuple[np.ndarray, list[set[int]], int, int]) -> None:
    rec, _, k, n_items = case
    assert 0.0 <= M.catalog_coverage(rec, n_items, k) <= 1.0
    assert 0.0 <= M.exposure_gini(rec, n_items, k) < 1.0
    rng = np.random.default_rng(n_items)
    feats = rng.random((n_items, 3))
    ild = M.intra_list_diversity(rec, feats, k)
    assert ((ild[~np.isnan(ild)] >= -1e-12) & (ild[~np.isnan(ild)] <= 1 + 1e-12)).all()
    nov = M.novelty(rec, rng.integers(0, 10, n_items).astype(float), n_users=10, k=k)
    assert (nov[~np.isnan(nov)] >= 0).all()
