"""Batch inference over every user with Ray Data: a registry version scores users in parallel.

Each Ray Data actor verifies and loads the version once (the registry's signature check runs
in every actor, so a tampered artifact never scores anyone), then ranks batches of user ids.
The output is Parquet with ``user_id, rank, item_id, score``: what offline analysis, cache
warm-up or e-mail campaigns read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ray_app.registry.signing import SigningConfig


class _Scorer:
    """Ray Data callable class: one verified model per actor."""

    def __init__(
        self, registry: str, name: str, version: str | None, signing: SigningConfig, k: int
    ) -> None:
        from ray_app.registry.store import Registry

        self.model, self.version = Registry(registry, signing).load(name, version)
        self.k = k

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rec = self.model.recommend(batch["user_id"].astype(str).tolist(), k=self.k)
        out = rec.to_frame()
        out["model_version"] = self.version.version
        return out


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
) -> dict[str, Any]:
    """Top-``k`` for ``users`` (default: every user the model knows) into Parquet files under
    ``out_dir``; returns counts. Users the model cannot score get no rows (the caller falls
    back, as serving does)."""
    import ray

    from ray_app.registry.store import Registry

    signing = signing or SigningConfig()
    if users is None:
        model, _ = Registry(registry, signing).load(name, version)
        users = [str(u) for u in model._require_fitted().user_ids]
    ds = ray.data.from_pandas(pd.DataFrame({"user_id": users}))
    scored = ds.map_batches(
        _Scorer,
        fn_constructor_args=(registry, name, version, signing, k),
        batch_size=batch_size,
        batch_format="pandas",
        concurrency=concurrency,
        num_cpus=0.5,
    )
    out = Path(out_dir)
    scored.write_parquet(str(out.resolve()))
    written = pd.read_parquet(out)
    return {
        "users": len(users),
        "rows": len(written),
        "users_scored": int(written["user_id"].nunique()),
    }
