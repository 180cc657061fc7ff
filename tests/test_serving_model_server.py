"""The model server without Ray: a real signed registry, the real verify-and-load path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import interactions, serve_replica

from ray_app.config import ConfigError
from ray_app.models.itemknn import ItemKNN
from ray_app.models.popularity import Popularity
from ray_app.registry.signing import SignatureError
from ray_app.registry.store import Registry
from ray_app.serving.answer import Answer
from ray_app.serving.model_server import ModelServer

# (user, item) pairs: m0 is the most popular, then m1, m2, m3; u3 has seen m0 and m3.
PAIRS = [("u1", "m0"), ("u1", "m1"), ("u2", "m0"), ("u2", "m1"), ("u2", "m2"), ("u3", "m0")]
PAIRS += [("u3", "m3"), ("u4", "m0"), ("u4", "m1"), ("u4", "m2"), ("u5", "m1")]


def server(reg: Registry, model: str, **user_config: Any) -> Any:
    """A started ModelServer replica object, as Serve would make it (constructor, then
    reconfigure)."""
    s = serve_replica(ModelServer, registry=str(reg.uri), signing=reg.signing, model=model)
    s.reconfigure(user_config)
    return s


def recommend(s: Any, users: list[str], k: int, exclude: list[list[str]] | None = None) -> Any:
    out: list[Answer] = asyncio.run(s.recommend_batch(users, [k] * len(users), exclude))
    return out


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def test_answers_name_model_and_version_and_fallback_ranks_unknown_users(reg: Registry) -> None:
    pop = reg.register(Popularity().fit(interactions(PAIRS))).version
    knn = reg.register(ItemKNN().fit(interactions(PAIRS))).version
    fallback = server(reg, "popularity")
    known, unknown = recommend(fallback, ["u3", "stranger"], 2, [[], ["m1"]])
    assert known == Answer(
        items=["m1", "m2"], model="popularity", model_version=pop, known_user=True
    )
    # Popularity is a FallbackRanker: an unknown user gets its ranking, minus ``exclude``
    assert unknown == Answer(
        items=["m0", "m2"], model="popularity", model_version=pop, known_user=False
    )
    # ItemKNN is not: it says it cannot score the user and leaves the fallback to the router
    (none,) = recommend(server(reg, "itemknn"), ["stranger"], 2)
    assert none == Answer(items=[], model="itemknn", model_version=knn, known_user=False)


def test_version_and_follow_come_from_user_config(reg: Registry) -> None:
    v1 = reg.register(Popularity().fit(interactions(PAIRS))).version
    v2 = reg.register(Popularity().fit(interactions(PAIRS[:-1]))).version
    assert server(reg, "popularity").info()["version"] == v2  # nothing given: the latest
    assert server(reg, "popularity", version=v1).info()["version"] == v1
    reg.set_alias("popularity", "production", v1)
    followed = server(reg, "popularity", follow="production")
    assert followed.info()["version"] == v1 and followed.info()["follow"] == "production"
    # a live update to a version that does not load keeps the current one serving
    followed.reconfigure({"version": "v0-missing", "follow": "production"})
    assert followed.info()["version"] == v1
    followed.reconfigure({"version": v2})
    assert followed.info()["version"] == v2 and followed.info()["follow"] is None


def test_a_bad_user_config_or_version_fails_the_start(reg: Registry) -> None:
    reg.register(Popularity().fit(interactions(PAIRS)))
    with pytest.raises(ConfigError, match="fault_injection"):
        server(reg, "popularity", fault_injection={"raise": True})
    with pytest.raises(SignatureError, match="v0-missing"):
        server(reg, "popularity", version="v0-missing")


def test_a_version_with_nan_scores_raises_so_the_router_falls_back(reg: Registry) -> None:
    model = Popularity().fit(interactions(PAIRS))
    assert model.item_scores_ is not None
    model.item_scores_[:] = np.nan  # signed like any other version: only scoring shows it
    reg.register(model, name="broken")
    with pytest.raises(FloatingPointError, match="NaN"):
        recommend(server(reg, "broken"), ["u1"], 2)
