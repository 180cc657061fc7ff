"""Batch inference over every user with Ray Data: a registry version scores users in parallel.

Each Ray Data actor verifies and loads the version once (the registry's signature check runs
in every actor, so a tampered artifact never scores anyone), then ranks batches of user ids
with the popularity fill of :mod:`ray_app.batch.ranking`. The output is Parquet with
``user_id, rank, item_id, score, model_version``: what offline analysis, cache warm-up or
e-mail campaigns read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import ray

from ray_app.batch.ranking import lists_table, rank_with_fill
from ray_app.registry.signing import SigningConfig
from ray_app.registry.store import Registry


@dataclass(frozen=True)
class AllUsersResult:
    """Summary of one :func:`recommend_all` run."""

    out_dir: Path
    version: str
    """The registry version that scored every user."""
    users: int
    """Users listed (default: every user the version knows)."""
    rows: int
    """Rows written by this run."""
    model_scored: int
    """Users with at least one item ranked by the model."""
    popularity_filled: int
    """Users with at least one popularity-filled slot (score NaN)."""


class _Scorer:
    """Ray Data callable class: one verified model per actor."""

    def __init__(
        self, registry: str, name: str, version: str | None, signing: SigningConfig, k: int
    ) -> None:
        self.model, self.version = Registry(registry, signing).load(name, version)
        self.k = k

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        ids = batch["user_id"].astype(str).tolist()
        table = lists_table(
            ids, rank_with_fill(self.model, ids, self.k), self.model.interactions.item_ids
        )
        versions = pa.array([self.version.version] * table.num_rows, pa.string())
        return table.append_column("model_version", versions)


def _parquet_files(directory: Path) -> set[Path]:
    return set(directory.rglob("*.parquet")) if directory.exists() else set()


def recommend_all(
    registry: str,
    name: str,
    out_dir: str | Path,
    *,
    version: str | None = None,
    users: list[str] | None = None,
    k: int = 20,
    batch_size: int = 512,
    concurrency: int = 2,
    signing: SigningConfig | None = None,
) -> AllUsersResult:
    """Top-``k`` for ``users`` (default: every user the version knows) into Parquet files under
    ``out_dir`` (Ray must be initialised). Every user gets ``min(k, unseen items)`` rows: those
    the model cannot score get the most popular unseen items with score NaN."""
    signing = signing or SigningConfig()
    reg = Registry(registry, signing)
    # Resolve "latest" once, here: every actor then loads the same version even if a newer
    # one is registered while the job runs, and a version that fails verification fails here.
    if users is None:
        model, mv = reg.load(name, version)
        users = [str(u) for u in model.interactions.user_ids]
    else:
        mv = reg.fetch(name, version)
    # One block per batch, up to a few per actor: a single block (what one frame gives) would
    # keep every actor but one idle, and on a cluster every node but one.
    blocks = max(1, min(math.ceil(len(users) / batch_size), 4 * concurrency))
    frame = pd.DataFrame({"user_id": users})
    ds = ray.data.from_pandas([frame.iloc[i::blocks].reset_index(drop=True) for i in range(blocks)])
    scored = ds.map_batches(
        _Scorer,
        fn_constructor_args=(registry, name, mv.version, signing, k),
        batch_size=batch_size,
        batch_format="pandas",
        concurrency=concurrency,
        num_cpus=0.5,
    )
    out = Path(out_dir).resolve()
    before = _parquet_files(out)
    scored.write_parquet(str(out))
    # Only this run's files: an earlier run into the same directory must not be counted.
    new = sorted(_parquet_files(out) - before)
    written = (
        pd.concat([pd.read_parquet(p, columns=["user_id", "score"]) for p in new])
        if new
        else pd.DataFrame({"user_id": [], "score": []})
    )
    per_user = written["score"].notna().groupby(written["user_id"])
    return AllUsersResult(
        out_dir=out,
        version=mv.version,
        users=len(users),
        rows=len(written),
        model_scored=int(per_user.any().sum()),
        popularity_filled=int((~per_user.all()).sum()),
    )
