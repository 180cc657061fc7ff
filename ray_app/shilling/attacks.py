"""Standard shilling attack profiles (Mobasher et al. 2007; Hurley et al. 2009), generated in
code so that a detector and a model's robustness can be measured offline.

An attack is a cohort of fake users, each rating the *target* items the maximum (a push
attack), some *filler* items chosen and rated by the attack type's rule, and, for the
bandwagon attack, a few *selected* popular items also rated the maximum:

* ``random`` - filler items drawn uniformly from the catalogue, rated around the global mean
  (normal with the global mean and standard deviation, rounded and clipped to the scale);
* ``average`` - filler items drawn uniformly, each rated around *its own* mean and standard
  deviation (the attacker knows every item's mean);
* ``bandwagon`` - the ``bandwagon_items`` most-rated items rated the maximum, plus random-attack
  filler;
* ``average_over_popular`` - filler drawn only from the ``popular_share`` most-rated items,
  rated around their means: built to look like a mainstream user and evade detectors.

Sizes follow the literature: ``size`` is the number of fake users as a fraction of the genuine
users, ``filler_size`` the number of filler items as a fraction of the catalogue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

AttackKind = Literal["random", "average", "bandwagon", "average_over_popular"]
ATTACK_KINDS: tuple[AttackKind, ...] = ("random", "average", "bandwagon", "average_over_popular")


class AttackConfig(BaseModel):
    """One attack cohort: its type and sizes."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: AttackKind = "random"
    """Profile type (see the module docstring)."""
    size: float = Field(default=0.05, gt=0, le=1)
    """Fake users as a fraction of the genuine users (0.05: 5 fake per 100 genuine)."""
    filler_size: float = Field(default=0.03, gt=0, lt=1)
    """Filler items per profile as a fraction of the catalogue."""
    bandwagon_items: int = Field(default=3, ge=1)
    """Bandwagon: how many of the most-rated items every profile rates the maximum."""
    popular_share: float = Field(default=0.1, gt=0, le=1)
    """Average-over-popular: filler comes from this top fraction of items by rating count."""
    min_rating: float = 1.0
    """Lowest rating of the scale."""
    max_rating: float = 5.0
    """Highest rating of the scale (what targets and bandwagon items get)."""

    @model_validator(mode="after")
    def _check_scale(self) -> AttackConfig:
        if self.max_rating <= self.min_rating:
            raise ValueError(
                f"max_rating {self.max_rating} must exceed min_rating {self.min_rating}"
            )
        return self


def _next_user_ids(existing: pd.Series, n: int) -> list[str]:
    """``n`` fresh numeric ids above every numeric id in ``existing`` (the line dialect only
    accepts numeric users, so fake users look like real ones)."""
    numeric = pd.to_numeric(existing.astype(str), errors="coerce")
    start = int(numeric.max()) + 1 if numeric.notna().any() else 1
    return [str(start + i) for i in range(n)]


def generate_attack(
    ratings: pd.DataFrame,
    targets: Sequence[str],
    config: AttackConfig,
    seed: int = 0,
    *,
    timestamp: int | None = None,
) -> pd.DataFrame:
    """Attack profiles against ``ratings`` (``user_id, item_id, rating`` and optionally
    ``timestamp``): ``user_id, item_id, rating, timestamp`` rows of fresh numeric users.

    Item statistics (means, spreads, popularity) come from ``ratings``, as an attacker who can
    read public aggregates would know them. Timestamps are ``timestamp`` when given, else drawn
    uniformly over the genuine ratings' time range (or 0 without one).
    """
    if not len(targets):
        raise ValueError("an attack needs at least one target item")
    rng = np.random.default_rng(seed)
    items = ratings["item_id"].astype(str)
    values = ratings["rating"].astype(np.float64)
    stats = values.groupby(items).agg(["mean", "std", "size"])
    missing = [t for t in targets if str(t) not in stats.index]
    if missing:
        raise ValueError(f"target items {missing[:5]} have no ratings to attack against")
    n_users = max(1, round(config.size * ratings["user_id"].nunique()))
    catalogue = stats.index.to_numpy(dtype=str)
    target_set = {str(t) for t in targets}
    by_count = stats.sort_values("size", ascending=False, kind="stable").index.to_numpy(dtype=str)
    selected = (
        [i for i in by_count if i not in target_set][: config.bandwagon_items]
        if config.kind == "bandwagon"
        else []
    )
    pool = (
        by_count
        if config.kind != "average_over_popular"
        else by_count[: max(1, round(config.popular_share * len(by_count)))]
    )
    pool = np.array([i for i in pool if i not in target_set and i not in selected])
    n_filler = min(len(pool), max(1, round(config.filler_size * len(catalogue))))

    # One row per (profile, filler slot): a random subset of the pool per profile.
    keys = rng.random((n_users, len(pool)))
    filler_idx = np.argpartition(keys, n_filler - 1, axis=1)[:, :n_filler]
    filler = pool[filler_idx].ravel()
    if config.kind in ("random", "bandwagon"):
        mean = np.full(filler.size, values.mean())
        spread = np.full(filler.size, values.std())
    else:
        mean = stats["mean"].reindex(filler).to_numpy()
        spread = stats["std"].reindex(filler).fillna(values.std()).to_numpy()
    filler_ratings = np.clip(
        np.rint(rng.normal(mean, spread)), config.min_rating, config.max_rating
    )
    pushed = [*sorted(target_set), *selected]
    user_ids = np.array(_next_user_ids(ratings["user_id"], n_users))
    frame = pd.DataFrame(
        {
            "user_id": np.concatenate(
                [np.repeat(user_ids, n_filler), np.repeat(user_ids, len(pushed))]
            ),
            "item_id": np.concatenate([filler, np.tile(pushed, n_users)]),
            "rating": np.concatenate(
                [filler_ratings, np.full(n_users * len(pushed), config.max_rating)]
            ).astype(np.float32),
        }
    )
    if timestamp is not None:
        frame["timestamp"] = np.int64(timestamp)
    elif "timestamp" in ratings.columns and len(ratings):
        lo, hi = int(ratings["timestamp"].min()), int(ratings["timestamp"].max())
        frame["timestamp"] = rng.integers(lo, hi + 1, size=len(frame), dtype=np.int64)
    else:
        frame["timestamp"] = np.int64(0)
    return frame.sort_values(["user_id", "item_id"], ignore_index=True)
