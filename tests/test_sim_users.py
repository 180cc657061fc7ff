"""Simulated users: behaviour follows hidden held-out taste; callable and HTTP drivers."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import httpx
import numpy as np
import pandas as pd
import pytest
from helpers import ListSink

from ray_app.events.line_dialect import parse_line_batch
from ray_app.events.model import WatchEvent
from ray_app.serving.answer import Answer
from ray_app.simulation.run import SimulationConfig, http_recommender, simulate, simulate_async
from ray_app.simulation.users import UserBehaviourConfig, build_population, react


def _ratings(n_users: int = 20, n_items: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (str(u), str(i), float(rng.integers(1, 6)), 0)
        for u in range(n_users)
        for i in rng.choice(n_items, 15, replace=False)
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def test_preferences_come_from_held_out_ratings_only() -> None:
    pop = build_population(_ratings())
    train_pairs = set(zip(pop.train["user_id"], pop.train["item_id"], strict=True))
    for user in pop.users.values():
        assert user.held_out_ratings
        assert not any((user.user_id, m) in train_pairs for m in user.held_out_ratings)
        assert all(user.held_out_ratings[m] >= 4 for m in user.affinity)


def test_liked_items_are_watched_more_often() -> None:
    cfg = UserBehaviourConfig(base_watch_prob=0.05, lift=0.9, organic_watch_prob=0.0)
    pop = build_population(_ratings(200), cfg)
    rng = np.random.default_rng(0)
    liked_hits = other_hits = liked_n = other_n = 0
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for user in pop.users.values():
        liked = list(user.affinity)[:3]
        other = [f"x{i}" for i in range(3)]
        reactions = react(user, liked + other, at, rng, cfg)
        watched = {e.movie_id for e in reactions if isinstance(e, WatchEvent)}
        liked_hits += len(watched & set(liked))
        other_hits += len(watched & set(other))
        liked_n, other_n = liked_n + len(liked), other_n + 3
    assert liked_hits / liked_n > 0.6 > 0.15 > other_hits / other_n


def test_callable_simulation_produces_parseable_lines() -> None:
    pop = build_population(_ratings())
    sink = ListSink()
    cfg = SimulationConfig(n_users=None, steps_per_user=2, clock="virtual")
    answer = Answer(
        items=[str(i) for i in range(10)], variant="B", model="itemknn", model_version="3"
    )
    stats = simulate(pop, lambda u: answer, cfg, sink)
    assert stats.requests == 40 and stats.per_variant == {"B": 40}
    assert sink.closed
    parsed = parse_line_batch(
        [s.encode() for s in sink.lines],
        topic="movielog",
        partitions=0,
        offsets=list(range(len(sink.lines))),
    )
    assert parsed.dead.num_rows == 0
    good = parsed.good.to_pandas()
    reco = good[good["kind"] == "reco"]
    assert len(reco) == 40 and set(reco["server"]) == {"B@itemknn:3"}
    assert (good["kind"] == "watch").sum() == stats.watch_events
    # Deterministic for a seed.
    again = ListSink()
    simulate(pop, lambda u: answer, cfg, again)

    def strip_latency(lines: list[str]) -> list[str]:  # measured, so not reproducible
        return [re.sub(r", [0-9.]+ ms$", "", line) for line in lines]

    assert strip_latency(again.lines) == strip_latency(sink.lines)


def test_failing_recommender_is_counted_not_fatal() -> None:
    pop = build_population(_ratings(5))

    def broken(user: str) -> Answer:
        raise RuntimeError("down")

    sink = ListSink()
    stats = simulate(pop, broken, SimulationConfig(n_users=None, clock="virtual"), sink)
    assert stats.failures == 15 and stats.requests == 0
    assert sink.lines == [] and sink.closed


def test_max_requests_bounds_run() -> None:
    pop = build_population(_ratings())
    cfg = SimulationConfig(n_users=None, steps_per_user=5, max_requests=7, clock="virtual")
    sink = ListSink()
    answer = Answer(items=["1"], variant="A", model="pop", model_version="1")
    assert simulate(pop, lambda u: answer, cfg, sink).requests == 7
    assert sum("recommendation request" in line for line in sink.lines) == 7


def test_answers_without_provenance_are_logged_as_unknown() -> None:
    pop = build_population(_ratings(3))
    sink = ListSink()
    cfg = SimulationConfig(n_users=None, steps_per_user=1, clock="virtual")
    stats = simulate(pop, lambda u: Answer(items=["1"]), cfg, sink)
    assert stats.per_variant == {"unknown": 3}
    reco = [line for line in sink.lines if "recommendation request" in line]
    assert len(reco) == 3
    assert all("recommendation request unknown@unknown:unknown, status 200" in r for r in reco)


def test_http_driver_with_bounded_concurrency() -> None:
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        if request.url.path.endswith("/3"):
            return httpx.Response(503)
        assert request.url.params["format"] == "json"
        if request.url.path.endswith("/4"):
            return httpx.Response(200, json={"items": ["1"], "unexpected": True})
        body = {"items": ["1", "2"], "model": "itemknn", "model_version": "7", "variant": "A"}
        return httpx.Response(200, json=body)

    pop = build_population(_ratings(10))
    cfg = SimulationConfig(n_users=None, steps_per_user=2, concurrency=3, clock="virtual")
    sink = ListSink()

    async def main() -> int:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            fn = http_recommender(client, "http://svc", k=5)
            return (await simulate_async(pop, fn, cfg, sink)).requests

    # Users 3 (HTTP 503) and 4 (a body that is not an Answer) fail both of their requests.
    assert asyncio.run(main()) == 16
    assert 1 < peak <= 3
    reco = [line for line in sink.lines if "recommendation request" in line]
    assert len(reco) == 16
    assert all("recommendation request A@itemknn:7, status 200, result: 1, 2, " in r for r in reco)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        SimulationConfig(endpoint="localhost:8000")
    with pytest.raises(ValueError, match="lift"):
        UserBehaviourConfig(base_watch_prob=0.6, lift=0.6)
