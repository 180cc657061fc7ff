"""An unsupervised shilling detector: two published profile features, robust z-scores, a
threshold and a flag budget.

Features, per user (vectorised over the long ``user_id, item_id, rating`` frame):

* **Popularity degree** (Li & Luo 2011): the mean ``log`` of the number of users who rated
  each of the user's items. Fake profiles fill up with items drawn from the whole catalogue,
  which real users rarely reach; their items are far less popular than a real user's.
* **RDMA**, rating deviation from mean agreement (Chirita et al. 2005): the mean over the
  user's rated items of ``|rating - item mean| / item ratings``. Ratings made up around the
  global mean disagree with the crowd, most of all on rarely rated items.

Each feature becomes a robust z-score (modified z-score: distance from the median in units of
the scaled MAD) over the users with at least ``min_profile`` interactions; low popularity and
high deviation are suspicious, and a user's score is the larger of the two. A user is flagged
when the score exceeds ``threshold`` (3.5 by default, the outlier cut Iglewicz and Hoaglin
recommend for modified z-scores), and never more than ``flag_budget`` of the scored users are
flagged (highest scores first): the detector never needs to know how many fakes there are.
The item statistics, the median and the MAD are estimated twice, the second time without the
users the first pass flagged, so that a large cohort cannot hide by dragging the reference
towards itself (its filler raises the popularity of the rare items it fills with).

Known blind spot: profiles built from popular items rated near their means (the
*average-over-popular* attack of Hurley et al. 2009) look like mainstream users on both
features, and escape; ``BENCHMARKS.md`` has the figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ray_app.errors import UserError

SCORE_COLUMNS = ["user_id", "score", "flagged"]
REQUIRED_COLUMNS = ("user_id", "item_id", "rating")
MAD_TO_SD = 1.4826
"""Scales a normal sample's median absolute deviation to its standard deviation."""


class ShillingConfig(BaseModel):
    """The shilling screen: detector settings, and what the train step does with them."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    enabled: bool = True
    """Score users before training and leave the flagged ones out of it."""
    threshold: float = Field(default=3.5, gt=0)
    """Flag users whose score (robust z) exceeds this."""
    flag_budget: float = Field(default=0.1, gt=0, le=1)
    """At most this share of the scored users is flagged, highest scores first."""
    min_profile: int = Field(default=10, ge=2)
    """Users with fewer interactions are not scored (their means are noise) nor flagged."""
    min_users: int = Field(default=50, ge=3)
    """With fewer scored users than this nothing is flagged: the reference needs a crowd."""
    metrics_file: Path | None = None
    """Write the screen's gauges here in Prometheus textfile format (node-exporter's textfile
    collector); relative paths resolve against ``RAY_APP_HOME``."""


def _robust_z(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``(values - median) / (1.4826 MAD)`` with the median and MAD of ``reference``; the
    standard deviation stands in for a zero MAD, and a constant reference gives 0."""
    ref = reference[np.isfinite(reference)]
    if ref.size == 0:
        return np.zeros_like(values)
    med = float(np.median(ref))
    scale = MAD_TO_SD * float(np.median(np.abs(ref - med)))
    if scale <= 0:
        scale = float(ref.std())
    if scale <= 0:
        return np.zeros_like(values)
    return (values - med) / scale


def _long(ratings: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(user ids, user code, item code, rating)`` per distinct (user, item), sorted ids,
    duplicate rows' ratings averaged, NaN where the user did not rate the item."""
    u, users = pd.factorize(ratings["user_id"].astype(str), sort=True)
    i, items = pd.factorize(ratings["item_id"].astype(str), sort=True)
    r = pd.to_numeric(ratings["rating"], errors="coerce").to_numpy(dtype=np.float64)
    key = u.astype(np.int64) * max(len(items), 1) + i
    unique, inverse = np.unique(key, return_inverse=True)
    if len(unique) < len(key):
        rated = ~np.isnan(r)
        sums = np.bincount(inverse, np.where(rated, r, 0.0), minlength=len(unique))
        counts = np.bincount(inverse, rated, minlength=len(unique))
        r = np.divide(sums, counts, out=np.full(len(unique), np.nan), where=counts > 0)
        u, i = unique // max(len(items), 1), unique % max(len(items), 1)
    return np.asarray(users, dtype=str), u, i, r


def _features(
    users: np.ndarray, u: np.ndarray, i: np.ndarray, r: np.ndarray, reference: np.ndarray
) -> pd.DataFrame:
    """The features of every user, with item popularity and item means taken over the
    ``reference`` users only (a boolean mask over ``users``)."""
    n_users, n_items = len(users), int(i.max(initial=-1)) + 1
    ref = reference[u]
    rated = ~np.isnan(r)
    n_item = np.maximum(np.bincount(i[ref], minlength=n_items), 1).astype(np.float64)
    n_user = np.bincount(u, minlength=n_users).astype(np.float64)
    popularity = np.bincount(u, np.log(n_item[i]), minlength=n_users) / np.maximum(n_user, 1)

    ref_rated = ref & rated
    n_item_rated = np.bincount(i[ref_rated], minlength=n_items).astype(np.float64)
    sums = np.bincount(i[ref_rated], r[ref_rated], minlength=n_items)
    overall = float(r[ref_rated].mean()) if ref_rated.any() else 0.0
    item_mean = np.divide(sums, n_item_rated, out=np.full(n_items, overall), where=n_item_rated > 0)
    dev = np.abs(r[rated] - item_mean[i[rated]]) / np.maximum(n_item_rated[i[rated]], 1.0)
    n_rated = np.bincount(u[rated], minlength=n_users).astype(np.float64)
    dev_sum = np.bincount(u[rated], dev, minlength=n_users)
    deviation = np.divide(dev_sum, n_rated, out=np.full(n_users, np.nan), where=n_rated > 0)
    return pd.DataFrame(
        {
            "interactions": n_user.astype(np.int64),
            "rated": n_rated.astype(np.int64),
            "popularity": popularity,
            "deviation": deviation,
        },
        index=pd.Index(users, name="user_id"),
    )


def user_features(ratings: pd.DataFrame, reference: np.ndarray | None = None) -> pd.DataFrame:
    """Per user (index ``user_id``, sorted): ``interactions``, ``rated``, ``popularity`` (mean
    log item popularity) and ``deviation`` (RDMA over rated items; NaN without ratings).

    ``ratings`` is long ``user_id, item_id, rating``; a missing rating (a watch without one)
    counts for popularity only. Duplicate ``(user, item)`` rows are averaged. Item popularity
    and means come from the ``reference`` users (a mask over the sorted user ids; default
    all); an item no reference user has counts as rated once, at the overall mean.
    """
    users, u, i, r = _long(ratings)
    mask = np.ones(len(users), dtype=bool) if reference is None else np.asarray(reference)
    return _features(users, u, i, r, mask)


def score_users(ratings: pd.DataFrame, config: ShillingConfig) -> pd.DataFrame:
    """One row per user: ``user_id``, ``score`` (NaN when not scored) and ``flagged``.

    See the module docstring for the features, the score and how the flags are cut.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in ratings.columns]
    if missing:
        raise UserError(
            f"ratings have no column(s) {', '.join(missing)} (columns: "
            f"{', '.join(map(str, ratings.columns))}): give user_id,item_id,rating[,ts]"
        )
    users, u, i, r = _long(ratings)
    feats = _features(users, u, i, r, np.ones(len(users), dtype=bool))
    eligible = (feats["interactions"] >= config.min_profile).to_numpy()
    flagged = np.zeros(len(feats), dtype=bool)
    score = _score(feats, eligible)
    if int(eligible.sum()) >= config.min_users:
        # Second pass: a large cohort inflates the popularity of the items it fills with and
        # drags the item means, the median and the MAD towards itself; re-estimate all of
        # them without the users the first pass flagged.
        trusted = ~_cut(score, eligible, config)
        feats = _features(users, u, i, r, trusted)
        score = _score(feats, eligible & trusted)
        flagged = _cut(score, eligible, config)
    score[~eligible] = np.nan
    return pd.DataFrame(
        {"user_id": feats.index.to_numpy(dtype=str), "score": score, "flagged": flagged}
    )


def _score(feats: pd.DataFrame, reference: np.ndarray) -> np.ndarray:
    """Per user: the larger of the robust z-scores of low popularity and high deviation, each
    against the median and MAD of the ``reference`` users."""
    pop = feats["popularity"].to_numpy()
    # log: RDMA is a positive, right-skewed ratio; its log is close to symmetric.
    dev = np.log(feats["deviation"].to_numpy() + 1e-12)
    z_pop = -_robust_z(pop, pop[reference])
    z_dev = _robust_z(dev, dev[reference & (feats["rated"].to_numpy() > 0)])
    return np.fmax(z_pop, z_dev)


def _cut(score: np.ndarray, eligible: np.ndarray, config: ShillingConfig) -> np.ndarray:
    """Flags: eligible scores over the threshold, at most the budget, highest first."""
    masked = np.where(eligible, np.nan_to_num(score, nan=-np.inf), -np.inf)
    over = np.flatnonzero(masked > config.threshold)
    budget = int(np.floor(config.flag_budget * int(eligible.sum())))
    keep = over[np.argsort(-masked[over], kind="stable")][:budget]
    flagged = np.zeros(len(score), dtype=bool)
    flagged[keep] = True
    return flagged


def read_ratings(path: Path) -> pd.DataFrame:
    """A ratings file (``.parquet`` or ``.csv``) with at least ``user_id, item_id, rating``;
    :class:`UserError` naming the fix for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ratings file {path} does not exist; pass a Parquet or CSV file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix == ".csv":
            frame = pd.read_csv(path, dtype={"user_id": str, "item_id": str})
        else:
            raise UserError(f"{path}: unknown format {suffix!r}; use a .parquet or .csv file")
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot be read ({' '.join(str(exc).split())})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(
            f"{path} has no column(s) {', '.join(missing)} (it has: "
            f"{', '.join(map(str, frame.columns))}); give user_id,item_id,rating[,ts]"
        )
    if not pd.api.types.is_numeric_dtype(frame["rating"]):
        converted = pd.to_numeric(frame["rating"], errors="coerce")
        bad = frame["rating"][converted.isna() & frame["rating"].notna()]
        if len(bad):
            raise UserError(
                f"{path}: rating {bad.iloc[0]!r} is not a number; ratings must be numeric"
            )
        frame = frame.assign(rating=converted)
    return frame


def write_scores(scores: pd.DataFrame, path: Path) -> Path:
    """Write ``user_id, score, flagged`` as Parquet or CSV, by ``path``'s suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise UserError(f"--out {path}: use a .parquet or .csv file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    out = scores[SCORE_COLUMNS]
    if suffix == ".parquet":
        out.to_parquet(path, index=False)
    else:
        out.to_csv(path, index=False)
    return path
