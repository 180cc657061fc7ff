"""The one contract every recommender follows.

Ids are strings at the edges and contiguous integers inside: :class:`Interactions` owns the
mapping. A model that cannot score a user (unknown id, empty history for a history-based model)
marks it ``known=False`` in :class:`Recommendations` and the caller falls back.

Artifacts are written with numpy ``.npz`` (``allow_pickle=False``) and JSON so that loading a
model never unpickles anything.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Self, TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict

from ray_app.models.topk import top_k_indices


class ModelConfig(BaseModel):
    """Base for per-model pydantic configs: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


C = TypeVar("C", bound=ModelConfig)

Feedback = Literal["binary", "weighted"]
"""How a model reads interaction weights: every stored entry as 1, or the weight itself."""


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


@dataclass(frozen=True)
class Interactions:
    """A user x item implicit-feedback matrix with the string-id ↔ index mapping.

    ``matrix`` is CSR (users x items) holding the interaction weight (≥ 0).
    """

    user_ids: pd.Index
    item_ids: pd.Index
    matrix: sp.csr_matrix
    item_features: pd.DataFrame | None = None
    user_features: pd.DataFrame | None = None

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        user_col: str = "user_id",
        item_col: str = "item_id",
        weight_col: str | None = "weight",
        item_ids: Sequence[str] | None = None,
        item_features: pd.DataFrame | None = None,
        user_features: pd.DataFrame | None = None,
    ) -> Interactions:
        """Build from a long frame; duplicate (user, item) pairs have their weights summed.

        ``item_ids`` fixes the item universe (e.g. the whole catalogue) so items with no
        interactions still get an index.
        """
        for col in (user_col, item_col):
            if col not in frame.columns:
                raise ValueError(
                    f"interactions frame has no column {col!r}; columns are {list(frame.columns)}"
                )
        users = frame[user_col].astype(str)
        items = frame[item_col].astype(str)
        uidx = pd.Index(pd.unique(users), name="user_id")
        iidx = (
            pd.Index(pd.unique(np.asarray(item_ids, dtype=str)), name="item_id")
            if item_ids is not None
            else pd.Index(pd.unique(items), name="item_id")
        )
        rows = uidx.get_indexer(pd.Index(users))
        cols = iidx.get_indexer(pd.Index(items))
        if (cols < 0).any():
            missing = items[cols < 0].iloc[0]
            raise ValueError(f"item {missing!r} is not in the given item_ids universe")
        if weight_col is not None and weight_col in frame.columns:
            vals = frame[weight_col].to_numpy(dtype=np.float32)
        else:
            vals = np.ones(len(frame), dtype=np.float32)
        mat = sp.csr_matrix((vals, (rows, cols)), shape=(len(uidx), len(iidx)), dtype=np.float32)
        mat.sum_duplicates()
        return cls(uidx, iidx, mat, item_features, user_features)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)


@dataclass
class Recommendations:
    """Top-k lists for a batch of users, best first.

    ``items[i]``/``scores[i]`` are empty and ``known[i]`` is False when the model cannot
    score ``user_ids[i]``.
    """

    user_ids: list[str]
    items: list[list[str]]
    scores: list[list[float]]
    known: list[bool] = field(default_factory=list)


class Recommender(ABC, Generic[C]):
    """Base class: a pydantic config, ``fit``, batched ``recommend``, ``save``/``load``."""

    name: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]

    def __init__(self, config: C | None = None) -> None:
        self.config: C = config if config is not None else self.config_class()  # type: ignore[assignment]
        self.interactions_: Interactions | None = None

    # ---- training -----------------------------------------------------------------------
    @abstractmethod
    def fit(self, interactions: Interactions) -> Self:
        """Learn from interactions; returns self."""

    @property
    def interactions(self) -> Interactions:
        """The interactions the model was fitted on (its user and item id universe)."""
        return self._require_fitted()

    def _require_fitted(self) -> Interactions:
        if self.interactions_ is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(interactions) first")
        return self.interactions_

    # ---- scoring ------------------------------------------------------------------------
    @abstractmethod
    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """Dense scores (len(user_idx) x n_items) for known user indices; higher is better."""

    def can_score(self, user_idx: np.ndarray) -> np.ndarray:
        """Which of the (known) user indices this model can score; default: all."""
        return np.ones(len(user_idx), dtype=bool)

    def rank_items(
        self, user_idx: np.ndarray, k: int, exclude_seen: bool = True, batch_size: int = 1024
    ) -> tuple[np.ndarray, np.ndarray]:
        """Index-level top-``k`` for known user indices, the vectorised core of :meth:`recommend`.

        Returns ``(items, scores)``, both ``len(user_idx) x min(k, n_items)``: item indices best
        first, padded with ``-1`` (score ``-inf``) where a user has fewer than ``k`` candidates
        or cannot be scored (see :meth:`can_score`). Evaluation calls this directly so that no
        per-user Python objects are built.
        """
        if k <= 0:
            raise ValueError(f"k must be a positive integer, got {k}")
        inter = self._require_fitted()
        user_idx = np.asarray(user_idx, dtype=np.int64)
        kk = min(k, inter.n_items)
        items = np.full((len(user_idx), kk), -1, dtype=np.int64)
        top_scores = np.full((len(user_idx), kk), -np.inf, dtype=np.float64)
        if len(user_idx) == 0:
            return items, top_scores
        scorable = np.flatnonzero(self.can_score(user_idx))
        for start in range(0, len(scorable), batch_size):
            chunk = scorable[start : start + batch_size]
            rows = user_idx[chunk]
            scores = np.array(self.score_users(rows), dtype=np.float64, copy=True)
            if np.isnan(scores).any():
                # NaN sorts past every number, so ranking would quietly return arbitrary items;
                # a corrupt model must fail loudly so the caller falls back instead.
                raise FloatingPointError(
                    f"{type(self).__name__} produced NaN scores: the fitted state is corrupt; "
                    "retrain the model or load another version"
                )
            if exclude_seen:
                # Use the stored CSR structure, not nonzero(): an explicit 0-weight entry is still
                # an item the user has seen.
                seen = inter.matrix[rows]
                r = np.repeat(np.arange(len(rows)), np.diff(seen.indptr))
                scores[r, seen.indices] = -np.inf
            top = top_k_indices(scores, kk)
            vals = np.take_along_axis(scores, top, axis=1)
            valid = np.isfinite(vals)
            items[chunk] = np.where(valid, top, -1)
            top_scores[chunk] = np.where(valid, vals, -np.inf)
        return items, top_scores

    def recommend(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        batch_size: int = 1024,
    ) -> Recommendations:
        """Top-``k`` unseen items per user, best first; unknown users come back ``known=False``."""
        if k <= 0:
            raise ValueError(f"k must be a positive integer, got {k}")
        inter = self._require_fitted()
        user_ids = [str(u) for u in user_ids]
        uidx = inter.user_ids.get_indexer(pd.Index(user_ids))
        known = uidx >= 0
        scorable = known.copy()
        if known.any():
            scorable[known] = self.can_score(uidx[known])
        out_items: list[list[str]] = [[] for _ in user_ids]
        out_scores: list[list[float]] = [[] for _ in user_ids]
        pos = np.flatnonzero(scorable)
        item_names = inter.item_ids.to_numpy()
        top, top_scores = self.rank_items(uidx[pos], k, exclude_seen, batch_size)
        for j, p in enumerate(pos):
            valid = top[j] >= 0
            out_items[p] = item_names[top[j][valid]].tolist()
            out_scores[p] = top_scores[j][valid].tolist()
        return Recommendations(user_ids, out_items, out_scores, scorable.tolist())

    # ---- persistence --------------------------------------------------------------------
    def save(self, directory: str | Path) -> list[str]:
        """Write the model to ``directory``; returns the relative file names written."""
        inter = self._require_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"name": self.name, "config": self.config.model_dump(mode="json")}
        (d / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        m = inter.matrix.tocsr()
        np.savez(
            d / "interactions.npz",
            user_ids=inter.user_ids.to_numpy(dtype=str),
            item_ids=inter.item_ids.to_numpy(dtype=str),
            indptr=m.indptr,
            indices=m.indices,
            data=m.data,
        )
        state = self._state()
        np.savez(d / "state.npz", **state)
        return ["model.json", "interactions.npz", "state.npz"]

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Inverse of :meth:`save` (no pickle is ever loaded)."""
        d = Path(directory)
        meta = json.loads((d / "model.json").read_text())
        if meta.get("name") != cls.name:
            raise ValueError(f"{d} holds a {meta.get('name')!r} model, not {cls.name!r}")
        model = cls(cls.config_class.model_validate(meta["config"]))  # type: ignore[arg-type]
        with np.load(d / "interactions.npz", allow_pickle=False) as z:
            uids = pd.Index(z["user_ids"].astype(str), name="user_id")
            iids = pd.Index(z["item_ids"].astype(str), name="item_id")
            mat = sp.csr_matrix(
                (z["data"], z["indices"], z["indptr"]), shape=(len(uids), len(iids))
            )
        model.interactions_ = Interactions(uids, iids, mat)
        with np.load(d / "state.npz", allow_pickle=False) as z:
            model._set_state({k: z[k] for k in z.files})
        return model

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """Arrays that, with the interactions, fully determine the fitted model."""

    @abstractmethod
    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore from :meth:`_state`'s arrays."""


# ---- capabilities -----------------------------------------------------------------------------
# A capability is declared by inheriting its class, and callers test for it with isinstance:
# never by model name, getattr or hasattr. Each has a contract-test mixin in tests/model_contract.py.

EpochCallback = Callable[[int, dict[str, float], Any], None]
"""``(epoch, training metrics, the model usable at that epoch's weights)``."""


class ColdStart(ABC):
    """Capability: scores users the model never saw, from their profile features alone."""

    @abstractmethod
    def recommend_cold(
        self, user_features: pd.DataFrame, k: int = 10, exclude_seen: bool = True
    ) -> Recommendations:
        """Top-``k`` for users described by ``user_id`` (optional) and feature columns; every
        row comes back ``known=True``."""


class EpochTrainable(ABC):
    """Capability: training runs in epochs and can report after each one, so Ray Tune's ASHA
    can stop a poor trial early."""

    @abstractmethod
    def fit_with_epochs(self, interactions: Interactions, on_epoch: EpochCallback) -> Self:
        """:meth:`Recommender.fit`, calling ``on_epoch`` after every epoch with the model
        already usable (``recommend``, ``rank_items``) at that epoch's weights."""


class FallbackRanker(ABC):
    """Capability: one ranking that answers for any user, including ids the model never saw
    (what serving falls back to when a variant cannot answer)."""

    @abstractmethod
    def top_items(self, k: int, exclude: Collection[str] | None = None) -> list[str]:
        """The ``k`` best item ids not in ``exclude``, best first."""


class HistoryScorer(ABC):
    """Capability: scores users from a history given at request time, folded into what the model
    was trained on. For item-item models (a user's scores are a function of their history row
    alone) this is exact: the answer is what a model trained with that history would give."""

    @abstractmethod
    def recommend_from_history(
        self,
        user_ids: Sequence[str],
        histories: Sequence[Sequence[str]],
        k: int = 10,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> Recommendations:
        """Top-``k`` per user from their trained interactions (none for an id the model never
        saw) plus ``histories[i]``'s items, none of which, nor of ``exclude[i]``, is returned.
        Items the model does not know are ignored; a user with no known item at all comes back
        ``known=False``."""


def fold_in_rows(
    inter: Interactions,
    x: sp.csr_matrix,
    user_ids: Sequence[str],
    histories: Sequence[Sequence[str]],
) -> sp.csr_matrix:
    """Users x items rows: each user's trained row of ``x`` (the model's feedback matrix; empty
    for an unknown id) with weight 1 added at each history item the row does not have yet."""
    n = len(user_ids)
    uidx = inter.user_ids.get_indexer(pd.Index([str(u) for u in user_ids]))
    known = uidx >= 0
    pick = sp.csr_matrix(
        (np.ones(known.sum(), np.float32), (np.flatnonzero(known), uidx[known])),
        shape=(n, inter.n_users),
    )
    trained = sp.csr_matrix(pick @ x, dtype=np.float32)
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=n)
    flat = [str(i) for h in histories for i in h]
    cols = inter.item_ids.get_indexer(pd.Index(flat)) if flat else np.empty(0, np.int64)
    rows = np.repeat(np.arange(n), lengths)
    ok = cols >= 0
    fresh = sp.csr_matrix(
        (np.ones(ok.sum(), np.float32), (rows[ok], cols[ok])), shape=(n, inter.n_items)
    )
    fresh.sum_duplicates()
    fresh.data[:] = 1.0
    already = trained.copy()
    already.data[:] = 1.0
    # Items the trained row has keep their trained weight; only new ones are added.
    return sp.csr_matrix(trained + (fresh - fresh.multiply(already)), dtype=np.float32)


def rank_rows(
    inter: Interactions,
    rows: sp.csr_matrix,
    scores: np.ndarray,
    user_ids: Sequence[str],
    k: int,
    exclude: Sequence[Collection[str]] | None,
) -> Recommendations:
    """Top-``k`` of dense ``scores`` per row, never an item stored in ``rows`` or listed in
    ``exclude``; a row with no stored item comes back ``known=False``."""
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    scores = np.array(scores, dtype=np.float64, copy=True)
    r = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    scores[r, rows.indices] = -np.inf
    if exclude is not None:
        flat = [str(i) for e in exclude for i in e]
        cols = inter.item_ids.get_indexer(pd.Index(flat)) if flat else np.empty(0, np.int64)
        er = np.repeat(np.arange(len(exclude)), [len(e) for e in exclude])
        scores[er[cols >= 0], cols[cols >= 0]] = -np.inf
    known = np.diff(rows.indptr) > 0
    kk = min(k, inter.n_items)
    # ties by lower index, like the trained path, so a fold-in answer equals it exactly
    top = top_k_indices(scores, kk)
    vals = np.take_along_axis(scores, top, axis=1)
    names = inter.item_ids.to_numpy()
    items: list[list[str]] = []
    out_scores: list[list[float]] = []
    for i in range(len(user_ids)):
        valid = np.isfinite(vals[i]) & known[i]
        items.append(names[top[i][valid]].tolist())
        out_scores.append(vals[i][valid].tolist())
    return Recommendations([str(u) for u in user_ids], items, out_scores, known.tolist())
