"""The model server with a state store (a real ``redis-server``), without Ray: fresh history
leaves the lists at once, folds into item-item scores, and gives new users personal lists."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import serve_replica, wait_until
from model_contract import checkerboard_interactions

from ray_app.broker.embedded import free_port
from ray_app.models.ease import EASE, EASEConfig
from ray_app.models.itemknn import ItemKNN, ItemKNNConfig
from ray_app.models.popularity import Popularity
from ray_app.registry.store import Registry
from ray_app.serving.answer import Answer
from ray_app.serving.model_server import ModelServer
from ray_app.state.config import StateConfig
from ray_app.state.open_store import open_store
from ray_app.state.store import Activity, StateStore

pytestmark = pytest.mark.integration


@pytest.fixture()
def state(redis_url: str) -> Iterator[tuple[StateConfig, StateStore]]:
    cfg = StateConfig(kind="redis", url=redis_url, key_prefix=f"t{uuid.uuid4().hex[:10]}:")
    store = open_store(cfg)
    yield cfg, store
    store.clear()
    store.close()


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    reg = Registry(tmp_path_factory.mktemp("reg") / "registry")
    inter, _ = checkerboard_interactions()
    reg.register(EASE(EASEConfig(l2=5.0)).fit(inter))
    reg.register(ItemKNN(ItemKNNConfig(k=20)).fit(inter))
    reg.register(Popularity().fit(inter))
    return reg


def server(reg: Registry, model: str, state: StateConfig | None) -> Any:
    s = serve_replica(
        ModelServer, registry=str(reg.uri), signing=reg.signing, model=model, state=state
    )
    s.reconfigure({})
    return s


def ask(s: Any, users: list[str], k: int = 10) -> list[Answer]:
    out: list[Answer] = asyncio.run(s.recommend_batch(users, [k] * len(users)))
    return out


def watch(store: StateStore, user: str, items: list[str]) -> None:
    first = max(store.offsets().values(), default=0)
    store.append(
        [
            Activity(user, it, 1.7e9 + n, "watch", "movielog", 0, first + n)
            for n, it in enumerate(items)
        ]
    )


@pytest.mark.parametrize("model", ["ease", "itemknn"])
def test_a_watched_item_leaves_the_list_and_its_neighbours_rise(
    reg: Registry, state: tuple[StateConfig, StateStore], model: str
) -> None:
    cfg, store = state
    s = server(reg, model, cfg)
    (before,) = ask(s, ["u0"])
    assert before.items[0] == "i0" and before.known_user  # the checkerboard's held-out item
    # u0 (even items) just watched odd items i1 and i3: they leave the list, and odd items,
    # which co-occur with them, now rank above the zero-score even-user fillers.
    watch(store, "u0", ["i0", "i1", "i3"])
    (after,) = ask(s, ["u0"])
    assert after.known_user
    assert {"i0", "i1", "i3"}.isdisjoint(after.items)
    odd_before = [i for i in before.items if int(i[1:]) % 2]
    odd_after = [i for i in after.items if int(i[1:]) % 2]
    assert len(odd_after) > len(odd_before)


def test_a_new_user_with_three_events_gets_a_personal_list(
    reg: Registry, state: tuple[StateConfig, StateStore]
) -> None:
    cfg, store = state
    s = server(reg, "ease", cfg)
    (cold,) = ask(s, ["newbie"])
    assert cold.known_user is False and cold.items == []  # EASE leaves it to the fallback
    watch(store, "newbie", ["i1", "i3", "i5"])
    (warm,) = ask(s, ["newbie"])
    assert warm.known_user
    popular = ask(server(reg, "popularity", None), ["newbie"])[0].items
    assert warm.items != popular
    assert all(int(i[1:]) % 2 == 1 for i in warm.items[:5])  # co-watched with its history
    assert {"i1", "i3", "i5"}.isdisjoint(warm.items)


def test_the_fallback_never_recommends_fresh_history_either(
    reg: Registry, state: tuple[StateConfig, StateStore]
) -> None:
    cfg, store = state
    s = server(reg, "popularity", cfg)
    (before,) = ask(s, ["stranger"], k=3)
    watch(store, "stranger", before.items[:2])
    (after,) = ask(s, ["stranger"], k=3)
    assert set(before.items[:2]).isdisjoint(after.items) and len(after.items) == 3
    assert s.info()["state"] == "redis"


def test_an_unreachable_store_still_answers_from_the_trained_model(reg: Registry) -> None:
    cfg = StateConfig(kind="redis", url=f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.1)
    s = server(reg, "ease", cfg)
    (got,) = ask(s, ["u0"])
    assert got.known_user and got.items[0] == "i0"


def test_a_newly_trending_movie_leads_the_fallback_list_for_unknown_users(
    reg: Registry, state: tuple[StateConfig, StateStore]
) -> None:
    cfg, store = state
    s = server(reg, "popularity", cfg)
    (before,) = ask(s, ["stranger"], k=5)
    viral = next(f"i{j}" for j in range(30) if f"i{j}" not in before.items)
    now = time.time()
    store.append([Activity(f"fan{n}", viral, now, "watch", "movielog", 0, n) for n in range(6)])
    after = wait_until(
        lambda: (a := ask(s, ["stranger"], k=5)[0]).items[0] == viral and a,
        10,
        0.1,
        "the trending movie to lead the fallback list",
    )
    assert after.items[1:] == before.items[:4]  # then the trained popularity ranking
    (fan,) = ask(s, ["fan0"], k=5)
    assert viral not in fan.items  # a fan has watched it: their history excludes it
