"""User-choice models: which of the items a user was shown they go on to watch.

A feedback-loop experiment is only as honest as its choice model: users who pick by their own
taste and users who gravitate to whatever is popular react differently to the same lists, and
a simulator can create or hide a popularity echo chamber through that choice alone. Both are
here, vectorised over a whole round of lists (one row per user, one column per slot):

* ``preference``: item ``m`` in an examined slot is watched with probability
  ``base_prob + lift * affinity(u, m)``, where ``affinity`` is the user's hidden held-out
  rating over 5 for liked items (rating ≥ ``positive_rating``) and 0 otherwise, as in
  :mod:`ray_app.simulation.users`;
* ``popularity``: the same plus ``popularity_bias * pop(m)``, where ``pop`` is the item's
  interaction count over the most popular item's (a herd that follows the crowd).

Users examine the first ``examine_top`` slots and never watch an item twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, model_validator

ChoiceKind = Literal["preference", "popularity"]
CHOICE_KINDS: tuple[ChoiceKind, ...] = ("preference", "popularity")


class ChoiceConfig(BaseModel):
    """A user-choice model (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: ChoiceKind = "preference"
    """``preference`` (taste only) or ``popularity`` (taste plus a pull towards popular items)."""
    base_prob: float = Field(default=0.01, ge=0.0, le=1.0)
    """Chance to watch an examined item the user has no liking for."""
    lift: float = Field(default=0.5, ge=0.0, le=1.0)
    """Extra chance for a liked item, times ``rating / 5``."""
    popularity_bias: float = Field(default=0.15, ge=0.0, le=1.0)
    """``popularity`` only: extra chance for the most popular item, scaled down linearly by
    an item's interaction count."""
    examine_top: int = Field(default=10, ge=1)
    """Slots a user looks at, best first."""
    positive_rating: float = 4.0
    """Held-out ratings at or above this count as liked."""

    @model_validator(mode="after")
    def _check_probability(self) -> ChoiceConfig:
        bias = self.popularity_bias if self.kind == "popularity" else 0.0
        if self.base_prob + self.lift + bias > 1.0:
            raise ValueError(
                f"base_prob + lift (+ popularity_bias) = {self.base_prob + self.lift + bias} "
                "exceeds 1; lower one of them"
            )
        return self


@dataclass(frozen=True)
class Preferences:
    """Hidden held-out ratings as a sparse user × item matrix over fixed id orders."""

    user_ids: pd.Index
    item_ids: pd.Index
    ratings: sp.csr_matrix
    """Held-out rating per (user, item); 0 where none."""

    @classmethod
    def from_frame(
        cls, heldout: pd.DataFrame, user_ids: Sequence[str], item_ids: Sequence[str]
    ) -> Preferences:
        """From ``user_id, item_id, rating`` rows; rows outside the id orders are dropped."""
        users, items = pd.Index(list(user_ids)), pd.Index(list(item_ids))
        r = users.get_indexer(pd.Index(heldout["user_id"].astype(str)))
        c = items.get_indexer(pd.Index(heldout["item_id"].astype(str)))
        ok = (r >= 0) & (c >= 0)
        values = heldout["rating"].to_numpy(dtype=np.float64)[ok]
        matrix = sp.csr_matrix((values, (r[ok], c[ok])), shape=(len(users), len(items)))
        return cls(users, items, matrix)

    def lookup(self, lists: np.ndarray) -> np.ndarray:
        """Held-out rating of every slot of ``lists`` (item indices, one row per user in
        :attr:`user_ids` order, -1 for an empty slot); 0 where none."""
        rows = np.repeat(np.arange(lists.shape[0]), lists.shape[1])
        cols = np.maximum(lists.ravel(), 0)
        values = np.asarray(self.ratings[rows, cols]).ravel().reshape(lists.shape)
        return np.where(lists >= 0, values, 0.0)


def watch_probability(
    config: ChoiceConfig, held_out: np.ndarray, popularity: np.ndarray
) -> np.ndarray:
    """Per-slot watch probability from each slot's held-out rating (0: none) and its item's
    popularity relative to the most popular item (in [0, 1])."""
    liked = held_out >= config.positive_rating
    p = config.base_prob + config.lift * np.where(liked, held_out / 5.0, 0.0)
    if config.kind == "popularity":
        p = p + config.popularity_bias * popularity
    return np.clip(p, 0.0, 1.0)


def choose(
    config: ChoiceConfig,
    lists: np.ndarray,
    held_out: np.ndarray,
    popularity: np.ndarray,
    watched: sp.csr_matrix,
    rng: np.random.Generator,
) -> np.ndarray:
    """Which slots of ``lists`` (user × slot item indices, -1 empty) are watched: a boolean
    matrix of the same shape. ``popularity`` is per item (relative, in [0, 1]); ``watched``
    (user × item, non-zero = already watched) is never watched again."""
    shown = lists[:, : config.examine_top]
    valid = shown >= 0
    cols = np.maximum(shown, 0)
    rows = np.repeat(np.arange(shown.shape[0]), shown.shape[1]).reshape(shown.shape)
    seen = np.asarray(watched[rows.ravel(), cols.ravel()]).ravel().reshape(shown.shape) != 0
    p = watch_probability(config, held_out[:, : shown.shape[1]], popularity[cols])
    picked = (rng.random(shown.shape) < p) & valid & ~seen
    out = np.zeros(lists.shape, dtype=bool)
    out[:, : shown.shape[1]] = picked
    return out
