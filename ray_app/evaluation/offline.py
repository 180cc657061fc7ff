"""Offline evaluation of a fitted recommender against a held-out frame (full ranking).

:func:`rank_holdout` ranks the catalogue once for every holdout user; :func:`holdout_metrics`
turns that ranking into the metrics (overall, or for a subset of the users), so the overall
figures, the per-group ones and the fairness block
(:func:`ray_app.evaluation.fairness.fairness_block`) all read one ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ray_app.evaluation import metrics as M
from ray_app.models.base import Interactions, Recommender


@dataclass(frozen=True)
class RankedHoldout:
    """Every holdout user's top-``k`` list over the model's catalogue, and what they held out."""

    users: np.ndarray
    """Holdout user ids (``str``), sorted; row ``i`` of the arrays below is ``users[i]``."""
    recommended: np.ndarray
    """``len(users) x min(k, n_items)`` catalogue indices, best first, ``-1`` padded (an
    unknown or unscorable user is a row of ``-1``)."""
    truth: sp.csr_matrix
    """Held-out items per user; items outside the catalogue have indices past ``n_items``."""
    n_items: int
    """Size of the model's catalogue."""
    k: int
    """Cut-off the lists were ranked at."""
    item_popularity: np.ndarray
    """Training users per catalogue item (from the ``train`` interactions given)."""
    n_train_users: int
    """Users in the ``train`` interactions (the novelty denominator)."""

    @property
    def scored(self) -> np.ndarray:
        """Which users got a list (known to, and scorable by, the model)."""
        return np.asarray((self.recommended >= 0).any(axis=1))

    def subset(self, rows: np.ndarray) -> RankedHoldout:
        """The same ranking restricted to ``rows`` (a boolean mask or indices of users)."""
        return RankedHoldout(
            self.users[rows],
            self.recommended[rows],
            self.truth[rows],
            self.n_items,
            self.k,
            self.item_popularity,
            self.n_train_users,
        )


def rank_holdout(
    model: Recommender,  # type: ignore[type-arg]
    train: Interactions,
    test_frame: pd.DataFrame,
    k: int = 10,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    exclude_seen: bool = True,
) -> RankedHoldout:
    """Rank the whole catalogue of ``model`` (fitted on ``train``) for every user of
    ``test_frame``, keeping the top ``k``.

    Items the user interacted with in training are excluded when ``exclude_seen``. Each
    distinct ``(user, item)`` pair of ``test_frame`` is relevant, including items outside the
    catalogue (never hit, but they keep the denominators honest). ``train`` supplies the item
    popularity behind novelty and the popularity buckets (matched to the catalogue by id).
    """
    for col in (user_col, item_col):
        if col not in test_frame.columns:
            raise ValueError(
                f"test_frame has no column {col!r}; columns are {list(test_frame.columns)}"
            )
    fitted = model.interactions
    users = test_frame[user_col].astype(str).to_numpy()
    items = test_frame[item_col].astype(str).to_numpy()
    test_users, user_codes = np.unique(users, return_inverse=True)
    n_items = fitted.n_items

    item_idx = fitted.item_ids.get_indexer(pd.Index(items))
    unknown = item_idx < 0
    if unknown.any():
        _, extra = np.unique(items[unknown], return_inverse=True)
        item_idx[unknown] = n_items + extra
    width = int(item_idx.max(initial=n_items - 1)) + 1
    truth = sp.csr_matrix(
        (np.ones(len(item_idx), dtype=bool), (user_codes, item_idx)),
        shape=(len(test_users), width),
    )
    truth.sum_duplicates()

    uidx = fitted.user_ids.get_indexer(pd.Index(test_users))
    known = uidx >= 0
    recommended = np.full((len(test_users), min(k, n_items)), -1, dtype=np.int64)
    if known.any():
        top, _ = model.rank_items(uidx[known], k, exclude_seen=exclude_seen)
        recommended[known] = top

    # Popularity: training users per item, aligned to the model's catalogue by id.
    train_counts = np.diff(train.matrix.tocsc().indptr).astype(np.float64)
    pop = np.zeros(n_items, dtype=np.float64)
    pos = fitted.item_ids.get_indexer(train.item_ids)
    pop[pos[pos >= 0]] = train_counts[pos >= 0]
    return RankedHoldout(test_users, recommended, truth, n_items, k, pop, train.n_users)


def holdout_metrics(
    ranked: RankedHoldout, item_features: np.ndarray | None = None
) -> dict[str, float]:
    """The metrics of a ranking (see :func:`evaluate`); ``item_features`` is a catalogue-aligned
    ``n_items x d`` array that adds ``ild@k``."""
    rec, truth, k = ranked.recommended, ranked.truth, ranked.k
    scored = ranked.scored
    out: dict[str, float] = {
        f"ndcg@{k}": _nanmean(M.ndcg_at_k(rec, truth, k)),
        f"recall@{k}": _nanmean(M.recall_at_k(rec, truth, k)),
        f"precision@{k}": _nanmean(M.precision_at_k(rec, truth, k)),
        f"mrr@{k}": _nanmean(M.mrr_at_k(rec, truth, k)),
        f"hit@{k}": _nanmean(M.hit_at_k(rec, truth, k)),
        "coverage": M.catalog_coverage(rec, ranked.n_items, k),
        "novelty": _nanmean(
            M.novelty(rec, ranked.item_popularity, max(ranked.n_train_users, 1), k)
        ),
        "gini": M.exposure_gini(rec, ranked.n_items, k),
        "known": float(scored.mean()) if len(scored) else 0.0,
        "users": float(len(ranked.users)),
    }
    if item_features is not None:
        out[f"ild@{k}"] = _nanmean(M.intra_list_diversity(rec, item_features, k))
    return out


def evaluate(
    model: Recommender,  # type: ignore[type-arg]
    train: Interactions,
    test_frame: pd.DataFrame,
    k: int = 10,
    item_features: pd.DataFrame | None = None,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    exclude_seen: bool = True,
) -> dict[str, float]:
    """Full-ranking metrics of ``model`` (fitted on ``train``) over the users of ``test_frame``.

    Every item in the model's catalogue is a candidate; items the user interacted with in
    training are excluded when ``exclude_seen``. Each distinct ``(user, item)`` pair in
    ``test_frame`` is relevant. Users the model does not know, or cannot score, get an empty
    list and therefore count as zero hits (they are *not* dropped, so a cold-start weakness
    shows up in the numbers); ``known`` reports their share.

    ``train`` is the data the model was fitted on; it supplies the item popularity behind
    ``novelty`` (matched to the model's catalogue by item id).

    ``item_features`` (indexed by item id, numeric columns such as one-hot genres) adds
    ``ild@k``; items missing from it get an all-zero vector.

    Returns a flat dict: ``ndcg@k``, ``recall@k``, ``precision@k``, ``mrr@k``, ``hit@k``,
    ``coverage``, ``novelty``, ``gini``, ``known``, ``users`` and, with features, ``ild@k``.
    """
    ranked = rank_holdout(
        model, train, test_frame, k, user_col=user_col, item_col=item_col, exclude_seen=exclude_seen
    )
    feats = None
    if item_features is not None:
        ids = model.interactions.item_ids
        feats = item_features.reindex(ids).fillna(0.0).to_numpy(dtype=np.float64)
    return holdout_metrics(ranked, feats)


def _nanmean(values: np.ndarray) -> float:
    """Mean over defined values; ``nan`` (not a warning) when there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


AGE_BANDS = [
    (0, 18, "<18"),
    (18, 25, "18-24"),
    (25, 35, "25-34"),
    (35, 45, "35-44"),
    (45, 55, "45-54"),
    (55, 200, "55+"),
]
ACTIVITY_BANDS = [(0, 20, "<20"), (20, 50, "20-49"), (50, 150, "50-149"), (150, 10**9, "150+")]


def _band(values: pd.Series, bands: list[tuple[int, int, str]]) -> pd.Series:
    edges = [b[0] for b in bands] + [bands[-1][1]]
    return pd.cut(values, bins=edges, right=False, labels=[b[2] for b in bands]).astype(str)


def user_group_frame(
    train_frame: pd.DataFrame, users: pd.DataFrame | None = None, *, user_col: str = "user_id"
) -> pd.DataFrame:
    """One row per training user: ``activity`` band (training interactions) and, when user
    profiles are given, ``gender``, ``age_band`` and ``occupation``; indexed by user id."""
    counts = train_frame.groupby(train_frame[user_col].astype(str)).size()
    out = pd.DataFrame({"activity": _band(counts, ACTIVITY_BANDS)}, index=counts.index)
    if users is not None and len(users):
        prof = users.assign(user_id=users["user_id"].astype(str)).set_index("user_id")
        prof = prof.reindex(out.index)
        if "gender" in prof:
            out["gender"] = prof["gender"].fillna("unknown").replace("", "unknown")
        if "age" in prof:
            out["age_band"] = _band(prof["age"].astype("float64"), AGE_BANDS).replace(
                "nan", "unknown"
            )
        if "occupation" in prof:
            out["occupation"] = prof["occupation"].fillna("unknown").replace("", "unknown")
    return out


def group_labels(groups: pd.DataFrame, column: str, users: np.ndarray) -> np.ndarray:
    """``groups[column]`` for each of ``users`` (object array; NaN where unknown)."""
    return groups[column].reindex(pd.Index(users)).to_numpy(dtype=object)


def metrics_by_group(
    ranked: RankedHoldout, groups: pd.DataFrame, *, min_users: int = 5
) -> dict[str, dict[str, float]]:
    """:func:`holdout_metrics` per user group: ``{"gender=F": {...}, "age_band=25-34": {...}}``.

    ``groups`` is indexed by user id with one column per grouping (see
    :func:`user_group_frame`); groups with fewer than ``min_users`` holdout users are skipped
    as too noisy to read.
    """
    out: dict[str, dict[str, float]] = {}
    for column in groups.columns:
        labels = group_labels(groups, column, ranked.users)
        for label in sorted({str(x) for x in labels if isinstance(x, str)}):
            rows = labels == label
            if rows.sum() < min_users:
                continue
            out[f"{column}={label}"] = holdout_metrics(ranked.subset(rows))
    return out


def evaluate_by_group(
    model: Recommender,  # type: ignore[type-arg]
    train: Interactions,
    test_frame: pd.DataFrame,
    groups: pd.DataFrame,
    k: int = 10,
    *,
    user_col: str = "user_id",
    min_users: int = 5,
) -> dict[str, dict[str, float]]:
    """:func:`evaluate` per user group (one ranking, see :func:`metrics_by_group`)."""
    ranked = rank_holdout(model, train, test_frame, k, user_col=user_col)
    return metrics_by_group(ranked, groups, min_users=min_users)
