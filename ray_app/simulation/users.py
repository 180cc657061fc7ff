"""Simulated users whose hidden "true" taste is their held-out MovieLens ratings.

Each user's ratings are split with :func:`~ray_app.evaluation.split.per_user_holdout`; models
are trained on the *train* part (``Population.train``) and the user's behaviour follows only the
*held-out* part, so a model is rewarded for predicting what it has not seen — exactly what an
online experiment measures.

Behaviour for one recommendation list (all draws from one seeded generator):

* the user examines the first ``examine_top`` items; item ``m`` is watched with probability
  ``base_watch_prob + lift * affinity(m)``, where ``affinity`` is ``rating / 5`` for held-out
  ratings at or above ``positive_rating`` and 0 otherwise. A movie watched once is not
  watched again (the user remembers it);
* a watched movie streams ``1..max_minutes`` one-minute watch events;
* a watched movie is rated with probability ``rate_prob``: with the held-out rating when the
  user has one, else with a low rating drawn from ``{1, 2, 3}`` (a disappointing suggestion);
* independently of the list, with probability ``organic_watch_prob`` the user watches one
  held-out movie of their own choosing (organic activity a recommender did not cause).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ray_app.evaluation.split import per_user_holdout
from ray_app.events.model import Event, RateEvent, WatchEvent


class UserBehaviourConfig(BaseModel):
    """How simulated users react to recommendations (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    """Share of each user's ratings held out as their hidden preferences."""
    split_seed: int = 0
    """Seed of the holdout split; train models with the same seed's train part."""
    positive_rating: float = Field(default=4.0, ge=0.0)
    """Held-out ratings at or above this count as liked movies."""
    base_watch_prob: float = Field(default=0.01, ge=0.0, le=1.0)
    """Chance to watch an examined recommended movie the user has no held-out liking for."""
    lift: float = Field(default=0.5, ge=0.0, le=1.0)
    """Extra watch chance for a liked movie, times ``rating / 5``."""
    examine_top: int = Field(default=10, ge=1)
    """How many items of a list the user looks at, best first."""
    rate_prob: float = Field(default=0.3, ge=0.0, le=1.0)
    """Chance to rate a watched movie."""
    organic_watch_prob: float = Field(default=0.1, ge=0.0, le=1.0)
    """Chance per step to watch a held-out movie on one's own."""
    max_minutes: int = Field(default=3, ge=1)
    """A watch streams between 1 and this many one-minute events."""
    max_delay_s: float = Field(default=600.0, gt=0.0)
    """Watches happen up to this many seconds after the list was shown."""

    @model_validator(mode="after")
    def _check_probability(self) -> UserBehaviourConfig:
        if self.base_watch_prob + self.lift > 1.0:
            raise ValueError(
                f"base_watch_prob + lift = {self.base_watch_prob + self.lift} exceeds 1; "
                "lower lift or base_watch_prob"
            )
        return self


@dataclass
class SimulatedUser:
    """One user: hidden affinities (movie → weight in (0, 1]) and what they already watched."""

    user_id: str
    affinity: dict[str, float]
    held_out_ratings: dict[str, float]
    watched: set[str] = field(default_factory=set)


@dataclass
class Population:
    """The simulated users plus the train split models may learn from."""

    users: dict[str, SimulatedUser]
    train: pd.DataFrame
    test: pd.DataFrame

    @property
    def user_ids(self) -> list[str]:
        return list(self.users)


def build_population(
    ratings: pd.DataFrame,
    config: UserBehaviourConfig = UserBehaviourConfig(),
    n_users: int | None = None,
    seed: int = 0,
) -> Population:
    """Split ``ratings`` (MovieLens layout: user_id, item_id, rating) into train / hidden taste.

    ``n_users`` samples that many users (seeded); ``None`` keeps every user with a held-out row.
    """
    for col in ("user_id", "item_id", "rating"):
        if col not in ratings.columns:
            raise ValueError(
                f"ratings has no column {col!r}; pass the frame of ray_app.data.movielens.load()"
            )
    train, test = per_user_holdout(ratings, config.test_fraction, seed=config.split_seed)
    test = test.assign(user_id=test["user_id"].astype(str), item_id=test["item_id"].astype(str))
    users = np.asarray(pd.unique(test["user_id"]))
    if n_users is not None:
        if n_users < 1:
            raise ValueError(f"n_users must be ≥ 1 (or None for all), got {n_users}")
        rng = np.random.default_rng(seed)
        users = rng.choice(users, size=min(n_users, len(users)), replace=False)
    keep = test[test["user_id"].isin(set(users))]
    liked = keep["rating"].to_numpy(dtype=np.float64) >= config.positive_rating
    aff = np.where(liked, keep["rating"].to_numpy(dtype=np.float64) / 5.0, 0.0)
    frame = keep.assign(_aff=aff)
    out: dict[str, SimulatedUser] = {str(u): SimulatedUser(str(u), {}, {}) for u in users}
    # One pass over plain arrays instead of a groupby-apply: this runs for every user.
    for u, m, r, a in zip(
        frame["user_id"].to_numpy(),
        frame["item_id"].to_numpy(),
        frame["rating"].to_numpy(dtype=np.float64),
        frame["_aff"].to_numpy(),
        strict=True,
    ):
        user = out[str(u)]
        user.held_out_ratings[str(m)] = float(r)
        if a > 0:
            user.affinity[str(m)] = float(a)
    return Population(out, train, test)


def _watch(
    user: SimulatedUser,
    movie: str,
    at: datetime,
    rng: np.random.Generator,
    cfg: UserBehaviourConfig,
) -> list[Event]:
    minutes = int(rng.integers(1, cfg.max_minutes + 1))
    events: list[Event] = [
        WatchEvent(at + timedelta(seconds=60 * i), user.user_id, movie, i) for i in range(minutes)
    ]
    if rng.random() < cfg.rate_prob:
        rating = user.held_out_ratings.get(movie)
        if rating is None:
            rating = float(rng.integers(1, 4))
        events.append(RateEvent(at + timedelta(seconds=60 * minutes), user.user_id, movie, rating))
    user.watched.add(movie)
    return events


def react(
    user: SimulatedUser,
    items: list[str],
    shown_at: datetime,
    rng: np.random.Generator,
    config: UserBehaviourConfig = UserBehaviourConfig(),
) -> list[Event]:
    """The events ``user`` produces after being shown ``items`` at ``shown_at`` (time-sorted)."""
    events: list[Event] = []
    examined = items[: config.examine_top]
    draws = rng.random(len(examined))
    for movie, u in zip(examined, draws, strict=True):
        if movie in user.watched:
            continue
        p = config.base_watch_prob + config.lift * user.affinity.get(movie, 0.0)
        if u < p:
            # Strictly after the list: attribution windows exclude the reco's own timestamp.
            delay = 1.0 + rng.random() * (config.max_delay_s - 1.0)
            events.extend(_watch(user, movie, shown_at + timedelta(seconds=delay), rng, config))
    if rng.random() < config.organic_watch_prob:
        pool = [m for m in user.held_out_ratings if m not in user.watched]
        if pool:
            movie = pool[int(rng.integers(len(pool)))]
            delay = 1.0 + rng.random() * (config.max_delay_s - 1.0)
            events.extend(_watch(user, movie, shown_at + timedelta(seconds=delay), rng, config))
    events.sort(key=lambda e: e.ts)
    return events
