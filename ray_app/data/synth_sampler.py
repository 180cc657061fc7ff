"""The generative model behind :mod:`ray_app.data.synth`: items, users and integer-coded
interactions, sampled chunk by chunk.

The generative story, all vectorised with numpy:

* **items** get a popularity over a random permutation of ranks shaped like MovieLens-25M's
  (not a plain Zipf, whose top items every user would rate): ``p ∝ (rank + r0)^-popularity_tail``,
  a flat head then a power-law tail, with the offset ``r0`` solved so that the most popular item
  is expected to be rated by ``top_item_users`` of all users (about half in MovieLens-25M:
  81,491 of 162,541 rate Forrest Gump); one to three genres (MovieLens-25M's 19 genres, weighted like its catalogue) and a release
  year skewed towards recent years;
* **users** get demographics in MovieLens-1M's coding (age band, gender, occupation), a
  favourite genre that depends on their demographics (so cold-start models have a signal to
  find), and an activity level from a log-normal law (σ 1.4 gives MovieLens-25M's median of ~70
  ratings a user against a mean of 154, and a longest history of ~30k), scaled so the counts sum exactly to
  ``n_interactions`` (every user has at least ``min_per_user``, at most ``n_items``);
* each **interaction** picks an item from the global popularity or, with probability
  ``genre_affinity``, from the popularity restricted to the user's favourite genre; a user never
  rates the same item twice. Ratings are 0.5-5.0 (item quality + user bias + noise), in whole
  stars for 40 % of users and half stars for the rest, which gives MovieLens-25M's mix (70 %
  whole stars, 4.0 the mode, mean ~3.5); timestamps fall in a per-user activity window between 1996 and 2019.

Memory stays bounded by ``chunk_interactions`` interactions at a time: users are generated in
chunks (:func:`iter_chunks`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ray_app.config import ConfigError

GENRES = [
    "Drama",
    "Comedy",
    "Thriller",
    "Romance",
    "Action",
    "Horror",
    "Documentary",
    "Crime",
    "Adventure",
    "Sci-Fi",
    "Children",
    "Animation",
    "Mystery",
    "Fantasy",
    "War",
    "Western",
    "Musical",
    "Film-Noir",
    "IMAX",
]
"""MovieLens-25M's genres, most frequent first."""
_GENRE_WEIGHTS = np.array(
    [25, 16, 8, 7, 7, 5, 5, 5, 4, 4, 3, 3, 3, 3, 2, 1, 1, 0.5, 0.3], dtype=np.float64
)
AGES = np.array([1, 18, 25, 35, 45, 50, 56])
"""MovieLens-1M's age codes (band lower bounds; 1 means under 18)."""
_AGE_WEIGHTS = np.array([4, 18, 35, 20, 9, 8, 6], dtype=np.float64)
OCCUPATIONS = [
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
]
"""MovieLens-1M's occupations."""
_T0, _T1 = 820_454_400, 1_574_380_800  # 1996-01-01 .. 2019-11-22, MovieLens-25M's range


@dataclass(frozen=True)
class InteractionChunk:
    """Integer-coded interactions of a contiguous block of users (indices are 0-based)."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray


@dataclass(frozen=True)
class World:
    """Everything about items and users that the interaction sampler needs (0-based indices)."""

    item_pop: np.ndarray  # n_items, sums to 1
    item_cdf: np.ndarray
    draw_grid: np.ndarray  # m (number of draws), log spaced
    distinct_grid: np.ndarray  # expected distinct items after m draws
    item_genres: list[list[int]]
    item_quality: np.ndarray
    item_year: np.ndarray
    genre_cdfs: list[tuple[np.ndarray, np.ndarray]]  # per genre: (items, cumulative prob)
    user_counts: np.ndarray
    user_genre: np.ndarray
    user_age: np.ndarray
    user_gender: np.ndarray
    user_occupation: np.ndarray
    user_bias: np.ndarray
    user_half_stars: np.ndarray  # bool: this user rates in half stars, else whole stars only


def _validate(n_interactions: int, n_users: int, n_items: int, min_per_user: int) -> None:
    for name, value in (
        ("n_interactions", n_interactions),
        ("n_users", n_users),
        ("n_items", n_items),
        ("min_per_user", min_per_user),
    ):
        if int(value) != value or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if n_interactions > n_users * n_items:
        raise ConfigError(
            f"n_interactions={n_interactions} exceeds n_users x n_items = {n_users * n_items} "
            "(a user rates an item at most once): raise n_users or n_items"
        )
    if min_per_user * n_users > n_interactions:
        raise ConfigError(
            f"min_per_user={min_per_user} x n_users={n_users} exceeds n_interactions="
            f"{n_interactions}: lower min_per_user or n_users"
        )


def _user_counts(
    rng: np.random.Generator, n: int, n_users: int, n_items: int, floor: int, sigma: float
) -> np.ndarray:
    """Log-normal activity, integer counts in [floor, n_items] summing exactly to ``n``."""
    w = rng.lognormal(0.0, sigma, n_users)
    counts = np.full(n_users, floor, dtype=np.int64)
    for _ in range(64):  # each pass re-spreads what the cap cut off; converges in a few
        deficit = n - int(counts.sum())
        if deficit <= 0:
            break
        room = n_items - counts
        share = np.where(room > 0, w, 0.0)
        share /= share.sum()
        add = np.minimum(np.floor(share * deficit).astype(np.int64), room)
        rest = deficit - int(add.sum())
        if rest > 0:  # the fractional parts: one more each for users drawn by activity
            cand = np.flatnonzero(room > add)
            p = share[cand] / share[cand].sum()
            add[rng.choice(cand, size=min(rest, len(cand)), replace=False, p=p)] += 1
        counts += add
    return counts


def _top_item_rate(counts: np.ndarray, share: float) -> float:
    """The draw probability of the most popular item at which ``share`` of users are expected
    to rate it: solves ``mean_u 1 - exp(-counts_u p) = share`` (draws per user ≈ ratings)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):  # bisection: the left side grows with p
        mid = (lo + hi) / 2
        if float(np.mean(-np.expm1(-counts * mid))) < share:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _item_popularity(n_items: int, top_rate: float, tail: float) -> np.ndarray:
    """Draw probabilities by popularity rank, ``∝ (rank + r0)^-tail``, with ``r0`` solved so
    that rank 1 gets ``top_rate``: a flat head (MovieLens' top ten are within 1.5 x of each
    other) and a power-law tail. ``r0 = 0`` (a plain Zipf) where even that is too flat."""
    rank = np.arange(1, n_items + 1, dtype=np.float64)

    def shape(r0: float) -> np.ndarray:
        w = (rank + r0) ** -tail
        return w / w.sum()

    if shape(0.0)[0] <= top_rate:
        return shape(0.0)
    lo, hi = 0.0, float(n_items) * 1e3  # rank 1's share falls as r0 grows, to 1 / n_items
    for _ in range(60):
        mid = (lo + hi) / 2
        if shape(mid)[0] > top_rate:
            lo = mid
        else:
            hi = mid
    return shape(hi)


def _world(
    rng: np.random.Generator,
    n_interactions: int,
    n_users: int,
    n_items: int,
    top_item_users: float,
    popularity_tail: float,
    activity_sigma: float,
    min_per_user: int,
) -> World:
    counts = _user_counts(rng, n_interactions, n_users, n_items, min_per_user, activity_sigma)
    n_genres = len(GENRES)
    pop = _item_popularity(n_items, _top_item_rate(counts, top_item_users), popularity_tail)
    pop = pop[rng.permutation(n_items)]  # ranks at random over item ids
    gp = _GENRE_WEIGHTS / _GENRE_WEIGHTS.sum()
    k = rng.choice([1, 2, 3], size=n_items, p=[0.45, 0.35, 0.20])
    draws = rng.choice(n_genres, size=(n_items, 3), p=gp)
    item_genres = [sorted(set(row[:kk].tolist())) for row, kk in zip(draws, k, strict=True)]
    member = np.zeros((n_items, n_genres), dtype=bool)
    rows = np.repeat(np.arange(n_items), [len(g) for g in item_genres])
    member[rows, np.concatenate([np.asarray(g, dtype=np.int64) for g in item_genres])] = True
    genre_cdfs: list[tuple[np.ndarray, np.ndarray]] = []
    for g in range(n_genres):
        items = np.flatnonzero(member[:, g])
        if items.size == 0:  # tiny catalogues: fall back to the whole catalogue
            items = np.arange(n_items)
        cdf = np.cumsum(pop[items])
        genre_cdfs.append((items, cdf / cdf[-1]))
    # Popular films are on average a little better rated.
    quality = np.clip(3.35 + 0.15 * np.log(pop * n_items) + rng.normal(0, 0.4, n_items), 1, 5)
    year = np.clip(2019 - np.floor(rng.exponential(14.0, n_items)), 1902, 2019).astype(np.int64)

    age = rng.choice(len(AGES), size=n_users, p=_AGE_WEIGHTS / _AGE_WEIGHTS.sum())
    gender = (rng.random(n_users) < 0.28).astype(np.int64)  # 1 = F, ~28 % as in MovieLens-1M
    occupation = rng.integers(0, len(OCCUPATIONS), n_users)
    # Favourite genre from a (gender, age band) specific distribution: demographics → taste.
    taste = rng.dirichlet(np.full(n_genres, 0.5), size=(2, len(AGES))) * 0.6 + 0.4 * gp
    u = rng.random(n_users)
    cum = np.cumsum(taste[gender, age], axis=1)
    fav = np.minimum((u[:, None] > cum).sum(axis=1), n_genres - 1)
    draw_grid = np.unique(np.round(np.logspace(0, np.log10(30.0 * n_items), 160)))
    # 1 - (1-p)^m, via log1p for accuracy with tiny p; done in slices to bound memory.
    distinct_grid = np.concatenate(
        [
            -np.expm1(draw_grid[s : s + 16, None] * np.log1p(-pop)[None, :]).sum(axis=1)
            for s in range(0, len(draw_grid), 16)
        ]
    )
    return World(
        pop,
        np.cumsum(pop),
        draw_grid,
        distinct_grid,
        item_genres,
        quality,
        year,
        genre_cdfs,
        counts,
        fav,
        age,
        gender,
        occupation,
        rng.normal(0, 0.35, n_users),
        rng.random(n_users) < 0.6,
    )


def _draw(rng: np.random.Generator, world: World, users: np.ndarray, affinity: float) -> np.ndarray:
    """One popularity-weighted item per entry of ``users`` (with replacement)."""
    cdf = world.item_cdf
    out = np.minimum(np.searchsorted(cdf, rng.random(len(users)) * cdf[-1]), len(cdf) - 1)
    by_genre = rng.random(len(users)) < affinity
    if by_genre.any():
        sel = np.flatnonzero(by_genre)
        genre = world.user_genre[users[sel]]
        for g in np.unique(genre):
            pos = sel[genre == g]
            items, gcdf = world.genre_cdfs[g]
            hit = np.minimum(np.searchsorted(gcdf, rng.random(len(pos))), len(items) - 1)
            out[pos] = items[hit]
    return out.astype(np.int64)


def _dedupe(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values (a plain sort: numpy's hash-based ``unique`` is slower here)."""
    keys = np.sort(keys)
    if keys.size:
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    return keys


def _draws_for_distinct(world: World, target: np.ndarray) -> np.ndarray:
    """Draws (with replacement, from item popularity) expected to yield ``target`` distinct
    items: inverts ``E[distinct | m draws] = Σ_i 1 - (1 - p_i)^m`` on a log grid of ``m``."""
    return np.interp(target, world.distinct_grid, world.draw_grid)


def _sample_chunk(
    rng: np.random.Generator, world: World, lo: int, hi: int, affinity: float
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs for users ``lo..hi-1``, exactly ``counts[u]`` per user.

    Draw with replacement (as many draws as the expected-distinct curve says are needed),
    deduplicate, keep a random subset where a user got too many, and redraw the shortfall.
    Heavy users needing much of the catalogue, and any shortfall left after a few rounds, are
    finished exactly with Gumbel top-k sampling (weighted sampling without replacement).
    """
    n_items = len(world.item_pop)
    need = world.user_counts[lo:hi]
    users_local = np.arange(hi - lo, dtype=np.int64)
    keys = np.empty(0, dtype=np.int64)
    have = np.zeros(hi - lo, dtype=np.int64)
    # Beyond this share of the catalogue, with-replacement sampling would need huge oversampling.
    direct = need > 0.6 * world.distinct_grid[-1]
    for _ in range(4):
        todo = np.flatnonzero((need > have) & ~direct)
        if todo.size == 0:
            break
        margin = need[todo] * 1.05 + 2  # a few spare: over-full users are trimmed below
        size = _draws_for_distinct(world, margin) - _draws_for_distinct(world, have[todo])
        size = np.maximum(np.ceil(size), need[todo] - have[todo]).astype(np.int64)
        u = np.repeat(users_local[todo], size)
        keys = _dedupe(np.concatenate([keys, u * n_items + _draw(rng, world, u + lo, affinity)]))
        owner = keys // n_items
        have = np.bincount(owner, minlength=hi - lo)
        if (have > need).any():
            # Keep a random subset of each over-full user's distinct items.
            # One float argsort instead of a lexsort: owner + U[0,1) sorts by owner, then at
            # random within each owner.
            order = np.argsort(owner + rng.random(len(keys)))
            starts = np.concatenate(([0], np.cumsum(have)[:-1]))
            rank = np.empty(len(keys), dtype=np.int64)
            rank[order] = np.arange(len(keys)) - starts[owner[order]]
            keys = keys[rank < need[owner]]  # stays sorted
            have = np.minimum(have, need)
    short = np.flatnonzero(need > have)
    if short.size:
        log_pop = np.log(world.item_pop)
        bounds = np.searchsorted(keys // n_items, np.stack([short, short + 1]))
        extra = []
        for ul, a, b in zip(short, bounds[0], bounds[1], strict=True):
            d = int(need[ul] - have[ul])
            score = log_pop + rng.gumbel(size=n_items)
            score[keys[a:b] % n_items] = -np.inf
            pick = np.argpartition(-score, d - 1)[:d]
            extra.append(ul * n_items + pick)
        keys = np.concatenate([keys, *extra])
    user = keys // n_items + lo
    item = keys % n_items
    # Shuffle within the chunk so files are not sorted by item within each user.
    perm = rng.permutation(len(user))
    return user[perm], item[perm]


def iter_chunks(
    n_interactions: int,
    n_users: int,
    n_items: int,
    seed: int = 0,
    *,
    chunk_interactions: int = 2_000_000,
    top_item_users: float = 0.5,
    popularity_tail: float = 1.7,
    activity_sigma: float = 1.4,
    genre_affinity: float = 0.5,
    min_per_user: int | None = None,
) -> tuple[World, Iterator[InteractionChunk]]:
    """The item/user world and a generator of integer-coded interaction chunks.

    Fast path for benchmarks that build sparse matrices directly (no string ids). See
    :func:`ray_app.data.synth.generate` for the parameters.
    """
    if min_per_user is None:
        # MovieLens keeps users with ≥ 20 ratings; smaller synthetic sets need a lower floor.
        min_per_user = max(1, min(20, n_interactions // (4 * max(n_users, 1))))
    _validate(n_interactions, n_users, n_items, min_per_user)
    if not 0.0 < top_item_users < 1.0:
        raise ConfigError(f"top_item_users must be in (0, 1), got {top_item_users}")
    if popularity_tail <= 0.0:
        raise ConfigError(f"popularity_tail must be positive, got {popularity_tail}")
    if not 0.0 <= genre_affinity <= 1.0:
        raise ConfigError(f"genre_affinity must be in [0, 1], got {genre_affinity}")
    if chunk_interactions < 1:
        raise ConfigError(f"chunk_interactions must be positive, got {chunk_interactions}")
    rng = np.random.default_rng(seed)
    world = _world(
        rng,
        n_interactions,
        n_users,
        n_items,
        top_item_users,
        popularity_tail,
        activity_sigma,
        min_per_user,
    )

    def chunks() -> Iterator[InteractionChunk]:
        bounds = np.searchsorted(
            np.cumsum(world.user_counts),
            np.arange(chunk_interactions, n_interactions, chunk_interactions),
            side="right",
        )
        edges = np.unique(np.concatenate(([0], bounds, [n_users])))
        for lo, hi in itertools.pairwise(edges):
            # One child generator per chunk: chunk j's data does not depend on chunk sizes
            # before it having been consumed, only on (seed, j).
            crng = np.random.default_rng([seed, int(lo)])
            user, item = _sample_chunk(crng, world, int(lo), int(hi), genre_affinity)
            raw = (
                world.item_quality[item] + world.user_bias[user] + crng.normal(0.0, 0.85, len(item))
            )
            steps = np.where(world.user_half_stars[user], 2.0, 1.0)
            lowest = np.where(world.user_half_stars[user], 0.5, 1.0)
            rating = np.clip(np.round(raw * steps) / steps, lowest, 5.0).astype(np.float32)
            start = _T0 + (crng.random(hi - lo) * (_T1 - _T0) * 0.9).astype(np.int64)
            span = np.minimum(crng.lognormal(17.0, 1.5, hi - lo), _T1 - start).astype(np.int64)
            ul = user - lo
            ts = start[ul] + (crng.random(len(user)) * span[ul]).astype(np.int64)
            yield InteractionChunk(user.astype(np.int32), item.astype(np.int32), rating, ts)

    return world, chunks()
