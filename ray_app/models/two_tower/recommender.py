"""The two-tower :class:`~ray_app.models.base.Recommender` (Yi et al., RecSys 2019).

Persistence stores every tensor as a numpy array in ``state.npz``; nothing is pickled and
``torch.load`` is never called, also not for Ray Train checkpoints (they hold ``weights.npz``).
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd
import torch

from ray_app.errors import UserError
from ray_app.models.base import (
    ColdStart,
    EpochCallback,
    EpochTrainable,
    Interactions,
    Recommendations,
    Recommender,
)
from ray_app.models.topk import top_k_indices
from ray_app.models.two_tower.config import TwoTowerConfig
from ray_app.models.two_tower.features import FeatureEncoder, TowerInputs
from ray_app.models.two_tower.net import TowerDims, TwoTowerIndex, TwoTowerNet
from ray_app.models.two_tower.training import EpochHook, train, training_columns


class TwoTower(Recommender[TwoTowerConfig], ColdStart, EpochTrainable):
    """Two-tower retrieval: score = cosine(user vector, item vector).

    Every known user can be scored: one with no training interactions is embedded from its
    features through the cold slot (or, without features, gets the learnt "average user", which
    is a popularity-like prior). Unknown ids go through :meth:`recommend_cold` with features.
    """

    name = "two_tower"
    config_class = TwoTowerConfig

    def __init__(self, config: TwoTowerConfig | None = None) -> None:
        super().__init__(config)
        self.index_: TwoTowerIndex | None = None
        self.net_: TwoTowerNet | None = None
        self.encoder_: FeatureEncoder | None = None
        self.train_metrics_: dict[str, float] = {}

    def fit(self, interactions: Interactions) -> Self:
        """Train the towers (in-process or on Ray Train), then precompute the serving index."""
        return self._fit(interactions, None)

    def fit_with_epochs(self, interactions: Interactions, on_epoch: EpochCallback) -> Self:
        """:meth:`fit`, calling ``on_epoch(epoch, metrics, self)`` after every epoch with this
        model usable at that epoch's weights. Needs ``num_workers: 0`` (the in-process loop)."""
        return self._fit(interactions, on_epoch)

    def _fit(self, interactions: Interactions, on_epoch: EpochCallback | None) -> Self:
        cfg = self.config
        encoder = FeatureEncoder.fit(interactions.user_features, interactions.item_features)
        inputs = TowerInputs.build(interactions, encoder)
        dims = TowerDims.for_data(
            interactions.n_users, interactions.n_items, encoder, cfg.embedding_dim, cfg.hidden
        )
        columns = training_columns(interactions, inputs, cfg.feedback)
        if len(columns["user"]) < 2:
            raise UserError(
                f"two_tower needs at least 2 interactions to train, got {len(columns['user'])}: "
                "train on a larger snapshot"
            )
        x = interactions.matrix.tocsr()
        user_has_history = np.diff(x.indptr) > 0
        item_has_history = np.bincount(x.indices, minlength=interactions.n_items) > 0

        def publish(net: TwoTowerNet) -> None:
            self.index_ = TwoTowerIndex.from_net(net, inputs, user_has_history, item_has_history)
            self.net_, self.encoder_ = net, encoder
            self.interactions_ = interactions

        hook: EpochHook | None = None
        if on_epoch is not None:
            callback = on_epoch

            def hook(epoch: int, net: TwoTowerNet, metrics: dict[str, float]) -> None:
                publish(net)
                callback(epoch, metrics, self)

        trained = train(columns, dims, cfg, hook)
        publish(TwoTowerNet.from_state_arrays(dims, trained.weights))
        self.train_metrics_ = trained.metrics
        return self

    def _index(self) -> TwoTowerIndex:
        self._require_fitted()
        assert self.index_ is not None
        return self.index_

    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """User vectors @ item vectorsᵀ."""
        return self._index().scores(user_idx)

    def _cold_user_vectors(self, user_features: pd.DataFrame) -> np.ndarray:
        """Unit vectors for users described only by features (``age``, ``gender``,
        ``occupation``; any may be missing), through the cold id slot."""
        self._require_fitted()
        assert self.net_ is not None and self.encoder_ is not None
        codes = self.encoder_.users(user_features.reset_index(drop=True), len(user_features))
        with torch.no_grad():
            self.net_.eval()
            out = self.net_.user_embedding(
                torch.zeros(len(user_features), dtype=torch.int64),
                torch.from_numpy(codes["age"]),
                torch.from_numpy(codes["gender"]),
                torch.from_numpy(codes["occupation"]),
            )
        return out.numpy()

    def recommend_cold(
        self, user_features: pd.DataFrame, k: int = 10, exclude_seen: bool = True
    ) -> Recommendations:
        """Top-``k`` for users known only by their features (new sign-ups, unknown ids).

        ``user_features`` has one row per user: optional ``user_id`` (default: the row
        position), ``age``, ``gender``, ``occupation``. If a ``user_id`` is one this model was
        trained on and ``exclude_seen``, that user's seen items are still excluded. Every row
        comes back ``known=True``.
        """
        if k <= 0:
            raise ValueError(f"k must be a positive integer, got {k}")
        inter = self._require_fitted()
        frame = user_features.reset_index(drop=True)
        ids = (
            frame["user_id"].astype(str).tolist()
            if "user_id" in frame.columns
            else [str(i) for i in range(len(frame))]
        )
        scores = self._cold_user_vectors(frame) @ self._index().item_embeddings.T
        scores = scores.astype(np.float64)
        if exclude_seen:
            uidx = inter.user_ids.get_indexer(pd.Index(ids))
            for row in np.flatnonzero(uidx >= 0):
                seen = inter.matrix[uidx[row]].indices
                scores[row, seen] = -np.inf
        kk = min(k, inter.n_items)
        top = top_k_indices(scores, kk)
        vals = np.take_along_axis(scores, top, axis=1)
        names = inter.item_ids.to_numpy()
        items: list[list[str]] = []
        out_scores: list[list[float]] = []
        for t, v in zip(top, vals, strict=True):
            ok = np.isfinite(v)
            items.append(names[t[ok]].tolist())
            out_scores.append(v[ok].tolist())
        return Recommendations(ids, items, out_scores, [True] * len(ids))

    def _state(self) -> dict[str, Any]:
        index = self._index()
        assert self.net_ is not None and self.encoder_ is not None
        state: dict[str, Any] = {
            "user_embeddings": index.user_embeddings,
            "item_embeddings": index.item_embeddings,
            "dims": self.net_.dims.to_array(),
            **self.encoder_.state(),
        }
        state.update({f"net.{k}": v for k, v in self.net_.state_arrays().items()})
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.index_ = TwoTowerIndex(
            np.asarray(state["user_embeddings"], dtype=np.float32),
            np.asarray(state["item_embeddings"], dtype=np.float32),
        )
        self.encoder_ = FeatureEncoder.from_state(state)
        weights = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
        self.net_ = TwoTowerNet.from_state_arrays(TowerDims.from_array(state["dims"]), weights)
