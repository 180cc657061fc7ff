"""Replica loss under steady load (issue 14): the real app on a local Ray, ~100 requests/s,
a variant replica and then a router replica killed by PID. Every answer must still be a 200
with k ids (fallbacks allowed), and the service must heal by itself: variant answers again,
and Serve back at two replicas of each. Latency figures are printed for BENCHMARKS.md
("Replica loss"), never asserted."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from helpers import (
    Sample,
    SteadyLoad,
    StubHandle,
    interactions,
    serve_replica,
    serve_replica_pids,
    wait_http,
    wait_until,
)

from ray_app.broker.embedded import free_port
from ray_app.models.itemknn import ItemKNN
from ray_app.models.popularity import Popularity
from ray_app.registry.store import Registry
from ray_app.serving.answer import Answer
from ray_app.serving.breaker import Breaker
from ray_app.serving.config import ServeArgs, VariantSpec
from ray_app.serving.router import ABRouter

USERS = 200
K = 20
RATE = 100.0
SETTLE_S = 10.0
"""Load kept on after each fault before the next step: recovery must fit in it."""
HEAL_TIMEOUT_S = 120.0
"""Liveness bound for Serve to replace a killed replica (a hang, not a speed, fails it)."""


@pytest.fixture(scope="module")
def url(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ray import serve

    from ray_app.serving.run import start_serving

    rng = np.random.default_rng(0)
    data = interactions(
        (f"u{u}", f"m{i}") for u in range(USERS) for i in rng.choice(80, size=12, replace=False)
    )
    reg = Registry(tmp_path_factory.mktemp("replica_loss") / "registry")
    reg.register(ItemKNN().fit(data))
    reg.register(Popularity().fit(data))
    args = ServeArgs(
        registry=str(reg.uri),
        variants=[VariantSpec(name="A", model="itemknn", weight=1.0)],
        kafka_bootstrap_servers="",
        rate_limit_per_min=10_000,  # the load, not the limiter, is under test
        watch_interval_s=0,
    )
    port = free_port()
    start_serving(args, "127.0.0.1", port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/recommend/u1")
        yield base
    finally:
        serve.shutdown()


def _kill_one(deployment: str) -> tuple[int, list[int]]:
    """SIGKILL one live replica of ``deployment``; its PID and the PIDs before."""
    pids = wait_until(
        lambda: (p := serve_replica_pids(deployment)) and len(p) == 2 and p,
        HEAL_TIMEOUT_S,
        what=f"two live replicas of {deployment}",
    )
    os.kill(pids[0], signal.SIGKILL)
    return pids[0], pids


def _healed(deployment: str, dead: int, load: SteadyLoad) -> float | None:
    """When (load clock) Serve had two live replicas of ``deployment`` again, none of them
    ``dead``; None if not within ``HEAL_TIMEOUT_S`` (asserted after the report)."""

    def back() -> bool:
        pids = serve_replica_pids(deployment)
        return len(pids) == 2 and dead not in pids

    try:
        wait_until(back, HEAL_TIMEOUT_S, 0.5, f"Serve replacing the killed {deployment} replica")
    except AssertionError:
        return None
    return load.now()


def _degraded(s: Sample) -> bool:
    """Answered, but not by the variant in time: a fallback, or slower than the SLO."""
    return s.status != 200 or not s.body or bool(s.body["fallback"]) or s.latency_s > 0.2


def _window(samples: list[Sample], start: float, end: float) -> list[Sample]:
    return [s for s in samples if start <= s.due_s < end]


def _report(name: str, samples: list[Sample], fault: float, end: float) -> dict[str, Any]:
    during = _window(samples, fault, end)
    assert during, f"no requests were due during the {name} fault: the client stalled"
    bad = [s.due_s for s in during if _degraded(s)]
    lat = np.array([s.latency_s for s in during])
    per_s = np.bincount(
        [int(s.due_s - fault) for s in during if _degraded(s)], minlength=int(end - fault)
    )
    out = {
        "fault": name,
        "requests": len(during),
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_first_5s_ms": float(
            np.percentile([s.latency_s for s in during if s.due_s < fault + 5.0], 99) * 1e3
        ),
        "max_ms": float(lat.max() * 1e3),
        "fallbacks": sum(1 for s in during if s.status == 200 and s.body and s.body["fallback"]),
        "errors": collections.Counter(
            s.body.get("client_error", s.status) if s.body else s.status
            for s in during
            if s.status != 200
        ),
        "recovery_s": (max(bad) - fault) if bad else 0.0,
        "degraded_per_s": per_s.tolist(),
    }
    print(out)
    return out


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skip(
    reason="issues 14/15, not met yet: these assume two replicas of the router and each slot; "
    "they stay at one until admin changes reach every replica, and a node loss stalled "
    "the service ~55 s (BENCHMARKS.md, Replica loss)",
)
def test_killing_a_variant_then_a_router_replica_loses_no_answer(url: str) -> None:
    paths = [f"/recommend/u{u}?format=json&k={K}" for u in range(USERS)]
    with SteadyLoad(url, RATE, paths) as load:
        load.wait_sent(5.0)  # steady state under load before the first fault
        t_variant = load.now()
        dead_variant, _ = _kill_one("variant-A")
        variant_healed = _healed("variant-A", dead_variant, load)
        load.wait_sent(t_variant + SETTLE_S)
        t_router = load.now()
        dead_router, _ = _kill_one("ABRouter")
        router_healed = _healed("ABRouter", dead_router, load)
        load.wait_sent(t_router + SETTLE_S)
        t_end = t_router + SETTLE_S
    samples = load.samples
    _report("variant-A replica", samples, t_variant, t_router)
    _report("ABRouter replica", samples, t_router, t_end)
    print(f"achieved {len(samples) / t_end:.0f} requests/s of {RATE:.0f} scheduled")
    print(
        f"replicas replaced after {variant_healed} / {router_healed} (faults at "
        f"{t_variant:.1f} / {t_router:.1f} s)"
    )
    assert variant_healed is not None and router_healed is not None, "Serve did not heal"

    failed = [s for s in samples if s.status != 200 or s.body is None or len(s.body["items"]) != K]
    kinds = collections.Counter(
        (s.status, str(s.body and s.body.get("client_error"))) for s in failed
    )
    assert not failed, f"{len(failed)}/{len(samples)} answers not 200 with {K} ids: {kinds}"
    for start, end in ((t_variant, t_router), (t_router, t_end)):
        # healed by itself: the last second before the next step is all variant answers
        last = _window(samples, end - 1.0, end)
        assert last and not any(
            s.status != 200 or not s.body or s.body["fallback"] for s in last
        ), (start, end)
    tail = _window(samples, t_end - 1.0, t_end)
    assert tail and all(s.status == 200 and s.body and s.body["variant"] == "A" for s in tail)


class DeadThenBack:
    """A variant whose replica is dead (every call fails, as a call to a killed actor does)
    until ``alive`` is set; counts the calls that reach it."""

    def __init__(self) -> None:
        self.alive = False
        self.calls = 0

    async def recommend_batch(self, user_ids: list[str], ks: list[int]) -> list[Answer]:
        self.calls += 1
        if not self.alive:
            raise RuntimeError("ActorDiedError: the actor died unexpectedly")
        return [Answer(items=[f"v{i}" for i in range(k)], model="knn") for k in ks]


async def _fallback(user_ids: list[str], ks: list[int], _: list[list[str]]) -> list[Answer]:
    return [Answer(items=[f"p{i}" for i in range(k)], model="popularity") for k in ks]


async def _rerank(items: list[list[str]], ks: list[int]) -> list[list[str]]:
    return [it[:k] for it, k in zip(items, ks, strict=True)]


def test_the_router_stops_calling_a_dead_variant_and_probes_it_back() -> None:
    variant = DeadThenBack()
    router = serve_replica(
        ABRouter,
        variants={"A": StubHandle(recommend_batch=variant.recommend_batch)},
        fallback=StubHandle(recommend_batch=_fallback),
        reranker=StubHandle(rerank_batch=_rerank),
    )
    router.reconfigure({"weights": {"A": 1.0}})
    router.breakers["A"] = Breaker(failures=3, open_s=0.2)

    def batch() -> list[Answer]:
        out: list[Answer] = asyncio.run(router.route_batch(["u1", "u2"], [5, 5]))
        return out

    reasons = [batch()[0].fallback_reason for _ in range(6)]
    assert reasons == ["error"] * 3 + ["circuit_open"] * 3
    assert variant.calls == 3, "an open breaker must not call the dead variant"
    assert all(len(a.items) == 5 and a.items[0] == "p0" for a in batch())

    variant.alive = True
    wait_until(lambda: not batch()[0].fallback, 5.0, 0.05, "the probe closing the breaker")
    answers = batch()
    assert [a.items[0] for a in answers] == ["v0", "v0"] and not answers[0].fallback
