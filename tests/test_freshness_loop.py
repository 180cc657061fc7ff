"""Freshness on the real loop: embedded broker → state consumer actors → state store (Ray
actor) → Serve over real HTTP. A watched movie leaves the user's list within a bound, and a
brand-new user's first events give them a personal list, both without retraining."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import wait_until
from kafka import KafkaProducer
from model_contract import checkerboard

from ray_app.broker.embedded import ensure_topics, free_port
from ray_app.broker.settings import KafkaSettings
from ray_app.events.line_dialect import format_line
from ray_app.events.model import WatchEvent
from ray_app.models.base import Interactions
from ray_app.models.ease import EASE, EASEConfig
from ray_app.models.popularity import Popularity
from ray_app.registry.store import Registry
from ray_app.serving.config import ServeArgs, VariantSpec
from ray_app.state.config import StateConfig, StateConsumerConfig
from ray_app.state.group import StateConsumerGroup
from ray_app.state.open_store import open_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FRESHNESS_BOUND_S = 10.0
"""Generous on a loaded 2-core machine; benchmarks/freshness.py measures the real figure."""


def numeric_checkerboard() -> Interactions:
    """:func:`checkerboard` with line-dialect ids (numeric users): user ``u`` likes every item
    ``m<i>`` of its own parity except ``m<u>``, which tops its list."""
    train, _ = checkerboard()
    train = train.assign(user_id=train["user_id"].str[1:], item_id="m" + train["item_id"].str[1:])
    return Interactions.from_frame(train, weight_col=None)


@pytest.fixture(scope="module")
def loop(
    ray_session: None, broker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    from ray import serve

    from ray_app.serving.run import start_serving

    topic = f"movielog-fresh-{os.getpid()}-{time.monotonic_ns()}"
    ensure_topics(broker, {topic: 2})
    root = tmp_path_factory.mktemp("fresh") / "registry"
    reg = Registry(root)
    inter = numeric_checkerboard()
    reg.register(EASE(EASEConfig(l2=5.0)).fit(inter))
    reg.register(Popularity().fit(inter))
    state = StateConfig(actor_name=f"fresh-{uuid.uuid4().hex[:8]}", detached=False)
    open_store(state)  # the driver owns the actor: it ends with the test session
    args = ServeArgs(
        registry=str(root),
        variants=[VariantSpec(name="A", model="ease")],
        state=state,
        rate_limit_per_min=10_000,
    )
    group = StateConsumerGroup(
        KafkaSettings(bootstrap_servers=broker),
        StateConsumerConfig(topics=[topic], group_id=f"state-{topic}", state=state),
        n=1,
    )
    port = free_port()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=0)
    try:
        group.start()
        start_serving(args, "127.0.0.1", port)
        # Joining the consumer group is start-up, not freshness: wait for the partitions.
        wait_until(lambda: group.stats()[0].partitions, 60, 0.2, "the state consumer to join")
        yield {"client": client, "producer": producer, "topic": topic}
    finally:
        producer.close()
        client.close()
        serve.shutdown()
        group.stop()


def _items(c: httpx.Client, user: str) -> dict[str, Any]:
    r = c.get(f"/recommend/{user}", params={"format": "json", "k": 10})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _watch(loop: dict[str, Any], user: str, movie: str) -> None:
    line = format_line(WatchEvent(dt.datetime.now(dt.UTC), user, movie, 0))
    loop["producer"].send(loop["topic"], key=user.encode(), value=line.encode())
    loop["producer"].flush()


def test_a_watched_movie_leaves_the_users_next_answers(loop: dict[str, Any]) -> None:
    c = loop["client"]
    first = _items(c, "0")
    assert first["items"][0] == "m0"  # the checkerboard's held-out item tops user 0's list
    started = time.monotonic()
    _watch(loop, "0", "m0")
    wait_until(
        lambda: "m0" not in _items(c, "0")["items"],
        FRESHNESS_BOUND_S,
        0.05,
        "m0 to leave user 0's list",
    )
    print(f"watched movie left the list after {time.monotonic() - started:.2f}s")
    after = _items(c, "0")
    assert after["known_user"] and not after["fallback"] and len(after["items"]) == 10


def test_a_brand_new_user_with_three_events_gets_a_personal_list(loop: dict[str, Any]) -> None:
    c = loop["client"]
    popular = _items(c, "4242")
    assert popular["fallback"]  # unknown at training time, no events: the popularity list
    for movie in ("m1", "m3", "m5"):
        _watch(loop, "4242", movie)
    personal = wait_until(
        lambda: (a := _items(c, "4242"))["known_user"] and a,
        FRESHNESS_BOUND_S,
        0.05,
        "a personal list for the new user",
    )
    assert personal["items"] != popular["items"]
    assert not personal["fallback"]
    assert {"m1", "m3", "m5"}.isdisjoint(personal["items"])
    # Odd movies are the ones co-watched with its history: they lead the list.
    assert all(int(i[1:]) % 2 == 1 for i in personal["items"][:5])
