"""Fit one model and evaluate it on a holdout: the step the train job, retraining and every
Ray Tune trial share."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ray_app.evaluation.fairness import FairnessConfig, fairness_block
from ray_app.evaluation.offline import evaluate, holdout_metrics, metrics_by_group, rank_holdout
from ray_app.models.base import EpochTrainable, Interactions, Recommender
from ray_app.models.catalog import build_model

EpochReport = Callable[[int, dict[str, float]], None]
"""``(epoch, training metrics merged with the holdout metrics at that epoch)``."""


@dataclass(frozen=True)
class FitInputs:
    """What a model is fitted on and judged against."""

    train: pd.DataFrame
    """Long ``user_id, item_id`` (optional ``weight``) frame to fit on."""
    test: pd.DataFrame
    """Holdout of the same shape; every distinct pair is relevant."""
    catalog: Sequence[str]
    """The item universe (every item of both frames)."""
    k: int
    """Cut-off of the metrics."""
    item_features: pd.DataFrame | None = None
    """Item features for models that use them (through :class:`Interactions`)."""
    user_features: pd.DataFrame | None = None
    """User profiles likewise."""
    user_groups: pd.DataFrame | None = None
    """Per-user groups (:func:`~ray_app.evaluation.offline.user_group_frame`) to evaluate by."""
    fairness: FairnessConfig | None = None
    """When set, also compute the fairness block (per-group intervals, parity, exposure)."""
    refit_on: pd.DataFrame | None = None
    """When set, the returned model is a fresh one fitted on this frame (what serves), while
    the metrics stay those of the model fitted on ``train``."""

    def interactions(self, frame: pd.DataFrame) -> Interactions:
        """``frame`` as interactions over :attr:`catalog`, with the features."""
        return Interactions.from_frame(
            frame,
            item_ids=self.catalog,
            item_features=self.item_features,
            user_features=self.user_features,
        )


@dataclass(frozen=True)
class Fitted:
    """A fitted model and how it did on the holdout."""

    model: Recommender[Any]
    metrics: dict[str, float]
    """Holdout metrics of the model fitted on the train frame."""
    metrics_by_group: dict[str, dict[str, float]] = field(default_factory=dict)
    """The same per user group (empty without ``user_groups``)."""
    fairness: dict[str, Any] = field(default_factory=dict)
    """The fairness block (:func:`~ray_app.evaluation.fairness.fairness_block`; empty without
    ``fairness``)."""


def fit_and_evaluate(
    name: str,
    config: Mapping[str, Any],
    inputs: FitInputs,
    on_epoch: EpochReport | None = None,
) -> Fitted:
    """Fit model ``name`` with ``config`` on ``inputs.train`` and evaluate it on
    ``inputs.test`` (overall, with ``user_groups`` per group, and with ``fairness`` the
    fairness block), all from one ranking of the holdout users.

    With ``on_epoch``, a model that is :class:`EpochTrainable` is evaluated on the holdout
    after every epoch and reported there; other models fit in one go.
    """
    train_i = inputs.interactions(inputs.train)
    model = build_model(name, config)
    if on_epoch is not None and isinstance(model, EpochTrainable):
        report = on_epoch

        def each_epoch(epoch: int, metrics: dict[str, float], at_epoch: Any) -> None:
            report(epoch, {**metrics, **evaluate(at_epoch, train_i, inputs.test, k=inputs.k)})

        model.fit_with_epochs(train_i, each_epoch)
    else:
        model.fit(train_i)
    ranked = rank_holdout(model, train_i, inputs.test, k=inputs.k)
    metrics = holdout_metrics(ranked)
    groups = {}
    if inputs.user_groups is not None:
        groups = metrics_by_group(ranked, inputs.user_groups)
    fairness = {}
    if inputs.fairness is not None and inputs.fairness.enabled:
        fairness = fairness_block(ranked, inputs.user_groups, inputs.fairness)
    if inputs.refit_on is not None:
        model = build_model(name, config).fit(inputs.interactions(inputs.refit_on))
    return Fitted(model, metrics, groups, fairness)
