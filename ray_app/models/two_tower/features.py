"""Feature frames → the integer codes and multi-hot vectors the towers read.

Feature frames come from :class:`~ray_app.models.base.Interactions`: ``item_features`` with
``item_id`` (column or index), optional ``genres`` (list of str, or ``|``-separated str) and
``year``; ``user_features`` with ``user_id``, optional ``age``, ``gender``, ``occupation`` -
exactly the ``movies`` and ``users`` frames of :mod:`ray_app.data.movielens` and
:mod:`ray_app.data.synth`. Missing features are fine: they map to the "unknown" code 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ray_app.models.base import Interactions

AGE_EDGES = np.array([18, 25, 35, 45, 50, 56], dtype=np.float64)
"""MovieLens-1M's age bands: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+ (buckets 1..7)."""
YEAR_EDGES = np.array(
    [1940, 1950, 1960, 1970, 1980, 1985, 1990, 1995, 2000, 2005, 2010, 2015, 2020],
    dtype=np.float64,
)
"""Release-year bucket edges (buckets 1..14); finer where the catalogue is dense."""


def _bucket(values: pd.Series, edges: np.ndarray) -> np.ndarray:
    """1-based bucket per value; 0 where the value is missing."""
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    out = np.digitize(np.nan_to_num(x, nan=0.0), edges) + 1
    out[np.isnan(x)] = 0
    return out.astype(np.int64)


def _codes(values: pd.Series, vocab: np.ndarray) -> np.ndarray:
    """1-based position of each value in ``vocab``; 0 for missing or unseen values."""
    idx = pd.Index(vocab).get_indexer(pd.Index(values.fillna("").astype(str)))
    return (idx + 1).astype(np.int64)


def _vocab(values: pd.Series) -> np.ndarray:
    vals = values.dropna().astype(str)
    return np.array(sorted(v for v in vals.unique() if v), dtype=str)


def _genre_lists(values: pd.Series) -> list[list[str]]:
    """Genres as lists: accepts lists/arrays or ``|``-separated strings."""
    out: list[list[str]] = []
    for g in values:
        if isinstance(g, str):
            out.append([x for x in g.split("|") if x])
        elif g is None or (isinstance(g, float) and np.isnan(g)):
            out.append([])
        else:
            out.append([str(x) for x in g if str(x)])
    return out


def _by_id(frame: pd.DataFrame | None, id_col: str, ids: pd.Index) -> pd.DataFrame | None:
    """``frame`` aligned to ``ids`` (missing ids become all-NA rows)."""
    if frame is None:
        return None
    f = frame.set_index(id_col) if id_col in frame.columns else frame
    f = f[~f.index.astype(str).duplicated()]
    f.index = f.index.astype(str)
    return f.reindex(ids.astype(str))


@dataclass(frozen=True)
class FeatureEncoder:
    """Vocabularies that turn feature frames into the integer / multi-hot arrays the towers read.

    Learned at ``fit`` from the training frames and saved with the model, so a cold user's
    features are encoded exactly like the training users'.
    """

    genders: np.ndarray
    occupations: np.ndarray
    genres: np.ndarray

    @classmethod
    def fit(
        cls, user_features: pd.DataFrame | None, item_features: pd.DataFrame | None
    ) -> FeatureEncoder:
        """Collect the vocabularies present in the feature frames."""
        empty = np.array([], dtype=str)
        uf = user_features if user_features is not None else pd.DataFrame()
        itf = item_features if item_features is not None else pd.DataFrame()
        genders = _vocab(uf["gender"]) if "gender" in uf.columns else empty
        occupations = _vocab(uf["occupation"]) if "occupation" in uf.columns else empty
        if "genres" in itf.columns:
            genres = np.array(sorted({g for gs in _genre_lists(itf["genres"]) for g in gs}), str)
        else:
            genres = empty
        return cls(genders, occupations, genres)

    def users(self, frame: pd.DataFrame | None, n: int) -> dict[str, np.ndarray]:
        """``age``, ``gender``, ``occupation`` codes (length ``n``) for rows of ``frame``."""
        zeros = np.zeros(n, dtype=np.int64)
        if frame is None:
            return {"age": zeros, "gender": zeros.copy(), "occupation": zeros.copy()}
        cols = frame.columns
        return {
            "age": _bucket(frame["age"], AGE_EDGES) if "age" in cols else zeros,
            "gender": _codes(frame["gender"], self.genders) if "gender" in cols else zeros.copy(),
            "occupation": _codes(frame["occupation"], self.occupations)
            if "occupation" in cols
            else zeros.copy(),
        }

    def items(self, frame: pd.DataFrame | None, n: int) -> dict[str, np.ndarray]:
        """``year`` codes and ``genres`` (``n x n_genres`` float32, rows sum to 1 or 0)."""
        year = np.zeros(n, dtype=np.int64)
        genres = np.zeros((n, len(self.genres)), dtype=np.float32)
        if frame is None:
            return {"year": year, "genres": genres}
        if "year" in frame.columns:
            year = _bucket(frame["year"], YEAR_EDGES)
        if "genres" in frame.columns and len(self.genres):
            lists = _genre_lists(frame["genres"])
            rows = np.repeat(np.arange(n), [len(g) for g in lists])
            cols = pd.Index(self.genres).get_indexer(pd.Index([g for gs in lists for g in gs]))
            ok = cols >= 0
            genres[rows[ok], cols[ok]] = 1.0
            # Mean, not sum, of genre embeddings: a movie with five genres is not five times louder.
            totals = genres.sum(axis=1, keepdims=True)
            np.divide(genres, totals, out=genres, where=totals > 0)
        return {"year": year, "genres": genres}

    def state(self) -> dict[str, np.ndarray]:
        """npz-ready vocabularies (string arrays, no pickle)."""
        return {
            "vocab_gender": self.genders,
            "vocab_occupation": self.occupations,
            "vocab_genres": self.genres,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray]) -> FeatureEncoder:
        """Inverse of :meth:`state`."""
        return cls(
            np.asarray(state["vocab_gender"], dtype=str),
            np.asarray(state["vocab_occupation"], dtype=str),
            np.asarray(state["vocab_genres"], dtype=str),
        )


@dataclass(frozen=True)
class TowerInputs:
    """Per-user and per-item tower inputs (feature codes), aligned with the interaction indices."""

    user_age: np.ndarray
    user_gender: np.ndarray
    user_occupation: np.ndarray
    item_year: np.ndarray
    item_genres: np.ndarray

    @classmethod
    def build(cls, inter: Interactions, encoder: FeatureEncoder) -> TowerInputs:
        """Encode ``inter``'s feature frames (rows missing from them get code 0)."""
        uf = _by_id(inter.user_features, "user_id", inter.user_ids)
        itf = _by_id(inter.item_features, "item_id", inter.item_ids)
        us = encoder.users(uf, inter.n_users)
        its = encoder.items(itf, inter.n_items)
        return cls(us["age"], us["gender"], us["occupation"], its["year"], its["genres"])
