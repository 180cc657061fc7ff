"""The A/B router without Ray: real model servers and re-ranker behind stand-in handles, so
every fallback reason can be provoked the way it happens in production."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import StubHandle, interactions, serve_replica

from ray_app.config import ConfigError
from ray_app.models.itemknn import ItemKNN
from ray_app.models.popularity import Popularity
from ray_app.registry.store import Registry
from ray_app.serving.answer import Answer
from ray_app.serving.model_server import ModelServer
from ray_app.serving.reranker import ReRanker
from ray_app.serving.router import ABRouter

PAIRS = [(f"u{u}", f"m{(u * 3 + j) % 12}") for u in range(12) for j in range(4)]


def _server(reg: Registry, model: str) -> StubHandle:
    s = serve_replica(ModelServer, registry=str(reg.uri), signing=reg.signing, model=model)
    s.reconfigure({})
    return StubHandle(recommend_batch=s.recommend_batch)


async def _never_in_time(user_ids: list[str], ks: list[int], *_: Any) -> list[Answer]:
    await asyncio.sleep(30)
    raise AssertionError("the deadline should have cancelled this call")


@pytest.fixture()
def graph(tmp_path: Path) -> dict[str, Any]:
    reg = Registry(tmp_path / "registry")
    knn = reg.register(ItemKNN().fit(interactions(PAIRS))).version
    cheap = reg.register(Popularity().fit(interactions(PAIRS)), name="cheap").version
    broken = Popularity().fit(interactions(PAIRS))
    assert broken.item_scores_ is not None
    broken.item_scores_[:] = np.nan
    reg.register(broken, name="broken")
    reranker = serve_replica(ReRanker, registry=str(reg.uri), signing=reg.signing)
    reranker.reconfigure({"diversity": 0.0})
    slow = StubHandle(recommend_batch=_never_in_time)
    router = serve_replica(
        ABRouter,
        variants={"A": _server(reg, "itemknn"), "B": _server(reg, "broken"), "S": slow},
        fallback=_server(reg, "cheap"),
        reranker=StubHandle(rerank_batch=reranker.rerank_batch),
    )
    router.reconfigure({"weights": {"A": 1.0}, "deadline_s": 0.2})
    return {"router": router, "knn": knn, "cheap": cheap, "slow": slow}


def route(router: Any, users: list[str], k: int = 5) -> list[Answer]:
    out: list[Answer] = asyncio.run(router.route_batch(users, [k] * len(users)))
    return out


def test_a_variant_answer_carries_slot_model_and_version(graph: dict[str, Any]) -> None:
    (ans,) = route(graph["router"], ["u1"])
    assert (ans.variant, ans.model, ans.model_version) == ("A", "itemknn", graph["knn"])
    assert ans.known_user and not ans.fallback and ans.fallback_reason is None
    assert len(ans.items) == 5 and not set(ans.items) & {i for u, i in PAIRS if u == "u1"}


def test_an_unknown_user_gets_the_configured_fallback_model(graph: dict[str, Any]) -> None:
    (ans,) = route(graph["router"], ["stranger"])
    assert (ans.variant, ans.model, ans.model_version) == ("A", "cheap", graph["cheap"])
    assert ans.fallback and ans.fallback_reason == "cannot_score" and not ans.known_user
    assert len(ans.items) == 5


def test_a_variant_that_raises_falls_back_with_reason_error(graph: dict[str, Any]) -> None:
    router = graph["router"]
    router.set_weights({"B": 1.0})
    answers = route(router, ["u1", "u2"])
    assert [(a.variant, a.model, a.fallback_reason) for a in answers] == [
        ("B", "cheap", "error"),
        ("B", "cheap", "error"),
    ]
    assert all(len(a.items) == 5 for a in answers)
    assert router.fell_back["B"] == 2 and router.served["B"] == 2


def test_a_variant_past_the_deadline_falls_back_and_is_cancelled(graph: dict[str, Any]) -> None:
    router = graph["router"]
    router.reconfigure({"weights": {"S": 1.0}, "deadline_s": 0.05})
    (ans,) = route(router, ["u1"])
    assert (ans.variant, ans.model, ans.fallback_reason) == ("S", "cheap", "timeout")
    assert len(ans.items) == 5
    (call,) = graph["slow"].recommend_batch.responses
    assert call.cancelled, "the slow call must be cancelled to free its replica"


def test_user_config_is_validated_and_a_bad_live_update_keeps_the_old(
    graph: dict[str, Any],
) -> None:
    router = graph["router"]
    assert router.config() == {
        "weights": {"A": 1.0, "B": 0.0, "S": 0.0},
        "salt": "exp-1",
        "deadline_s": 0.2,
    }
    router.reconfigure({"weights": {"Z": 1.0}})  # unknown slot: refused, logged
    router.reconfigure({"weights": {"A": 1.0}, "deadline": 1})  # typo: refused, logged
    assert router.config()["weights"]["A"] == 1.0 and router.config()["deadline_s"] == 0.2
    fresh = serve_replica(
        ABRouter, variants={"A": StubHandle()}, fallback=StubHandle(), reranker=StubHandle()
    )
    with pytest.raises(ConfigError, match="ABRouter user_config: weights"):
        fresh.reconfigure({"weights": {"Z": 1.0}})
    with pytest.raises(RuntimeError, match="no user_config"):
        route(fresh, ["u1"])
