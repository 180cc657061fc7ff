"""Closed feedback loops: retrain on what users chose from what was served, cycle after cycle,
and watch exposure concentrate (or not).

One arm is one run of ``cycles`` cycles over the same users:

1. **snapshots → training data**: :func:`~ray_app.training.data.load_training_data` reads the
   activity committed so far (the history, then every cycle's watches);
2. **retrain**: the project's one training step
   (:func:`~ray_app.training.fit.fit_and_evaluate`) fits the model, and the popularity model the
   re-ranker's novelty term reads;
3. **promote**: both are registered (signed) and the ``production`` alias moved to them; what
   serves is loaded back from the registry, signature verified;
4. **serve**: the model's candidates go through the serving re-ranker's own code
   (:func:`~ray_app.serving.reranker.rerank`: MMR diversity plus, as the mitigation, the
   novelty term) in this process, not over HTTP;
5. **choose**: simulated users watch from their list by a choice model
   (:mod:`ray_app.simulation.choice`); the watches are committed as the next snapshot batch.

Each cycle's figures are in :mod:`ray_app.experiments.feedback_loop_metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from ray_app.evaluation.split import per_user_holdout
from ray_app.experiments.feedback_loop_events import ActivityLog, rate_lines, watch_lines
from ray_app.experiments.feedback_loop_metrics import (
    METRICS,
    Trend,
    cycle_metrics,
    echo_chamber,
    fit_trend,
)
from ray_app.models.base import Recommender
from ray_app.models.popularity import Popularity
from ray_app.registry.signing import SigningConfig
from ray_app.registry.store import Registry
from ray_app.serving.reranker import GenreIndex, PopularityNovelty, ReRankerConfig, rerank
from ray_app.simulation.choice import ChoiceConfig, Preferences, choose
from ray_app.snapshots.store import SnapshotStore
from ray_app.training.data import load_training_data
from ray_app.training.fit import FitInputs, fit_and_evaluate
from ray_app.training.interactions import FeedbackConfig

Mitigation = Literal["none", "novelty"]
MITIGATIONS: tuple[Mitigation, ...] = ("none", "novelty")
PRODUCTION = "production"
CycleReport = Callable[[int, dict[str, float]], None]
"""``(cycle, figures)`` after each cycle (progress)."""


class FeedbackLoopConfig(BaseModel):
    """One arm of a feedback-loop experiment."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    cycles: int = Field(default=5, ge=1)
    """Retraining cycles."""
    model: str = "itemknn"
    """Catalogue name of the model retrained every cycle."""
    model_overrides: dict[str, Any] = Field(default_factory=dict)
    """Config overrides of that model."""
    k: int = Field(default=10, ge=1)
    """Items served per list."""
    candidates: int = Field(default=50, ge=1)
    """Items the model proposes per user before the re-ranker picks ``k``."""
    choice: ChoiceConfig = ChoiceConfig()
    """How simulated users pick from their lists."""
    reranker: ReRankerConfig = ReRankerConfig()
    """The serving re-ranker's settings without mitigation."""
    mitigation: Mitigation = "none"
    """``novelty``: switch the re-ranker's long-tail term on at ``novelty_weight``."""
    novelty_weight: float = Field(default=0.3, gt=0.0, le=1.0)
    """The re-ranker's ``novelty`` under the ``novelty`` mitigation."""
    test_fraction: float = Field(default=0.8, gt=0.0, lt=1.0)
    """Share of each user's ratings kept hidden as their taste (never trained on). High by
    default: a young service that learns most of its users' taste from what they choose from
    its own lists is where a feedback loop has room to form."""
    seed: int = 0
    """Seeds the split and every choice."""
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    """Confidence of the slope intervals."""

    def serving(self) -> ReRankerConfig:
        """The re-ranker settings this arm serves with."""
        if self.mitigation == "novelty":
            return self.reranker.model_copy(update={"novelty": self.novelty_weight})
        return self.reranker


@dataclass
class ArmResult:
    """One arm's figures per cycle and their trends."""

    config: FeedbackLoopConfig
    cycles: list[dict[str, float]] = field(default_factory=list)
    trends: dict[str, Trend] = field(default_factory=dict)
    versions: list[str] = field(default_factory=list)
    """The registry version promoted in each cycle."""

    @property
    def echo_chamber(self) -> bool:
        """Whether the exposure Gini's slope interval lies above zero."""
        return "gini" in self.trends and echo_chamber(self.trends["gini"])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "choice": self.config.choice.kind,
            "mitigation": self.config.mitigation,
            "config": self.config.model_dump(mode="json"),
            "cycles": self.cycles,
            "trends": {m: t.as_dict() for m, t in self.trends.items()},
            "echo_chamber": self.echo_chamber,
            "versions": self.versions,
        }


def _promote(registry: Registry, model: Recommender[Any], cycle: int, snapshot: Any) -> Any:
    """Register ``model``, move ``production`` to it and load it back (verified)."""
    mv = registry.register(model, snapshot=snapshot, extra={"feedback_loop": {"cycle": cycle}})
    registry.set_alias(mv.name, PRODUCTION, mv.version)
    loaded, _ = registry.load(mv.name, registry.resolve(mv.name, PRODUCTION))
    return loaded, mv.version


def _as_indices(lists: Sequence[Sequence[str]], items: pd.Index, k: int) -> np.ndarray:
    out = np.full((len(lists), k), -1, dtype=np.int64)
    for i, row in enumerate(lists):
        idx = items.get_indexer(pd.Index(list(row[:k])))
        out[i, : len(idx)] = idx
    return out


def run_arm(
    ratings: pd.DataFrame,
    genres: Mapping[str, Sequence[str]] | None,
    config: FeedbackLoopConfig,
    workdir: Path,
    signing: SigningConfig | None = None,
    on_cycle: CycleReport | None = None,
) -> ArmResult:
    """Run one arm on ``ratings`` (``user_id, item_id, rating``) with item ``genres`` for the
    re-ranker's diversity term; snapshots and registry live under ``workdir``."""
    ratings = ratings.assign(
        user_id=ratings["user_id"].astype(str), item_id=ratings["item_id"].astype(str)
    )
    history, hidden = per_user_holdout(ratings, config.test_fraction, seed=config.seed)
    users = sorted(history["user_id"].unique())
    catalog = sorted(ratings["item_id"].unique())
    items = pd.Index(catalog)
    prefs = Preferences.from_frame(hidden, users, catalog)
    liked = prefs.ratings.multiply(prefs.ratings >= config.choice.positive_rating).tocsr()
    log = ActivityLog(
        SnapshotStore.at(str(workdir / "snapshots")), datetime(2026, 1, 1, tzinfo=UTC)
    )
    log.append(rate_lines(history, log.at(0)))
    registry = Registry(str(workdir / "registry"), signing)
    index = GenreIndex(genres or {})
    settings = config.serving()
    rng = np.random.default_rng(config.seed)
    result = ArmResult(config)
    feedback = FeedbackConfig()
    for cycle in range(config.cycles):
        data = load_training_data(str(workdir / "snapshots"), feedback)
        frame = data.frame
        seen = _seen(frame, users, items)
        still_hidden = liked - liked.multiply(seen)
        still_hidden.eliminate_zeros()
        test = _frame_of(still_hidden, users, catalog)
        inputs = FitInputs(train=frame, test=test, catalog=catalog, k=config.k)
        fitted = fit_and_evaluate(config.model, config.model_overrides, inputs)
        model, version = _promote(registry, fitted.model, cycle, data.provenance)
        pop_model, _ = _promote(
            registry, fit_and_evaluate("popularity", {}, inputs).model, cycle, data.provenance
        )
        lists = _serve(model, pop_model, index, settings, users, items, config)
        counts = np.asarray(seen.sum(axis=0)).ravel()
        picked = choose(
            config.choice,
            lists,
            prefs.lookup(lists),
            counts / max(counts.max(), 1.0),
            seen,
            rng,
        )
        figures = cycle_metrics(
            lists,
            len(items),
            counts / len(users),
            still_hidden,
            np.asarray(picked.any(axis=1)),
            config.k,
        )
        figures["offline_ndcg"] = float(fitted.metrics.get(f"ndcg@{config.k}", float("nan")))
        rows, slots = np.nonzero(picked)
        log.append(
            watch_lines(
                np.asarray(users)[rows], items.to_numpy()[lists[rows, slots]], log.at(cycle + 1)
            )
        )
        figures["watches"] = float(len(rows))
        result.cycles.append(figures)
        result.versions.append(version)
        if on_cycle is not None:
            on_cycle(cycle, figures)
    result.trends = {
        m: fit_trend([c[m] for c in result.cycles], config.confidence) for m in METRICS
    }
    return result


def _seen(frame: pd.DataFrame, users: Sequence[str], items: pd.Index) -> sp.csr_matrix:
    """User × item 0/1 matrix of the training frame."""
    rows = pd.Index(list(users)).get_indexer(pd.Index(frame["user_id"]))
    cols = items.get_indexer(pd.Index(frame["item_id"]))
    seen = sp.csr_matrix((np.ones(len(frame)), (rows, cols)), shape=(len(users), len(items)))
    seen.data[:] = 1.0
    return seen


def _serve(
    model: Recommender[Any],
    popularity: Recommender[Any],
    index: GenreIndex,
    settings: ReRankerConfig,
    users: Sequence[str],
    items: pd.Index,
    config: FeedbackLoopConfig,
) -> np.ndarray:
    """Every user's served top-k as item indices: the model's candidates through the serving
    re-ranker's code, novelty from the promoted popularity model."""
    if not isinstance(popularity, Popularity):
        raise TypeError(f"the novelty term needs a popularity model, got {popularity.name}")
    novelty = PopularityNovelty.from_model(popularity)
    recs = model.recommend(list(users), k=config.candidates)
    served = rerank(index, novelty, settings, recs.items, [config.k] * len(users))
    return _as_indices(served, items, config.k)


def _frame_of(matrix: sp.csr_matrix, users: Sequence[str], catalog: Sequence[str]) -> pd.DataFrame:
    coo = matrix.tocoo()
    return pd.DataFrame(
        {
            "user_id": np.asarray(users, dtype=object)[coo.row],
            "item_id": np.asarray(catalog, dtype=object)[coo.col],
        }
    )
