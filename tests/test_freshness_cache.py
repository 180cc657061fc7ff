"""The hot-recommendation cache: alone, and in the model server in front of a real Redis state
store (a user's new event invalidates their entry at once)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import serve_replica
from model_contract import checkerboard_interactions

from ray_app.models.ease import EASE, EASEConfig
from ray_app.registry.store import Registry
from ray_app.serving.answer import Answer
from ray_app.serving.cache import RecommendationCache, history_signature
from ray_app.serving.model_server import ModelServer
from ray_app.state.config import StateConfig
from ray_app.state.open_store import open_store
from ray_app.state.store import Activity, HistoryItem, StateStore

A = Answer(items=["a", "b"], model="m", model_version="v1", known_user=True)
B = Answer(items=["c"], model="m", model_version="v1", known_user=True)
KEY = ("u1", 2, (), "m", "v1")


def test_a_hit_needs_the_same_signature_and_an_unexpired_entry() -> None:
    cache = RecommendationCache(ttl_s=10, max_entries=10)
    sig = history_signature([HistoryItem("x", 5.0)])
    assert cache.get(KEY, sig, now=0) is None
    cache.put(KEY, sig, A, now=0)
    assert cache.get(KEY, sig, now=9.9) == A
    newer = history_signature([HistoryItem("y", 6.0), HistoryItem("x", 5.0)])
    assert cache.get(KEY, newer, now=1) is None  # the user had a new event: invalid
    cache.put(KEY, sig, A, now=0)
    assert cache.get(KEY, sig, now=10.0) is None  # expired
    assert cache.stats() == {"entries": 0, "hits": 1, "misses": 3, "hit_ratio": 0.25}


def test_the_least_recently_used_entry_goes_first() -> None:
    cache = RecommendationCache(ttl_s=10, max_entries=2)
    sig = history_signature([])
    k2, k3 = ("u2", *KEY[1:]), ("u3", *KEY[1:])
    cache.put(KEY, sig, A, now=0)
    cache.put(k2, sig, B, now=0)  # type: ignore[arg-type]
    assert cache.get(KEY, sig, now=1) == A  # KEY is now the most recent
    cache.put(k3, sig, B, now=1)  # type: ignore[arg-type]
    assert cache.get(k2, sig, now=1) is None  # type: ignore[arg-type]
    assert cache.get(KEY, sig, now=1) == A


@pytest.fixture()
def served(redis_url: str, tmp_path: Any) -> Iterator[tuple[Any, StateStore, Registry]]:
    reg = Registry(tmp_path / "registry")
    inter, _ = checkerboard_interactions()
    reg.register(EASE(EASEConfig(l2=5.0)).fit(inter))
    cfg = StateConfig(kind="redis", url=redis_url, key_prefix=f"t{uuid.uuid4().hex[:10]}:")
    store = open_store(cfg)
    s = serve_replica(
        ModelServer, registry=str(reg.uri), signing=reg.signing, model="ease", state=cfg
    )
    s.reconfigure({})
    yield s, store, reg
    store.clear()
    store.close()


def ask(s: Any, user: str, k: int = 5) -> Answer:
    out: list[Answer] = asyncio.run(s.recommend_batch([user], [k]))
    return out[0]


@pytest.mark.integration
def test_a_repeat_is_a_hit_and_a_new_event_invalidates_it(served: Any) -> None:
    s, store, _ = served
    first = ask(s, "u0")
    assert ask(s, "u0") == first
    assert s.info()["cache"]["hits"] == 1
    store.append([Activity("u0", first.items[0], 1.7e9, "watch", "movielog", 0, 0)])
    after = ask(s, "u0")
    assert first.items[0] not in after.items  # not the cached answer
    assert s.info()["cache"] | {"entries": 0} == {
        "entries": 0,
        "hits": 1,
        "misses": 2,
        "hit_ratio": pytest.approx(1 / 3),
    }


@pytest.mark.integration
def test_the_cache_switches_off_in_user_config_and_a_new_version_misses(served: Any) -> None:
    s, _, reg = served
    ask(s, "u1")
    v2 = reg.register(EASE(EASEConfig(l2=50.0)).fit(checkerboard_interactions()[0])).version
    s.reconfigure({"version": v2})
    assert ask(s, "u1").model_version == v2  # the old version's entry is not used
    assert s.info()["cache"]["hits"] == 0
    s.reconfigure({"version": v2, "cache": False})
    ask(s, "u1")
    assert s.info()["cache"] is None
