"""Serving on a Ray cluster of three nodes on this machine (``ray.cluster_utils.Cluster``,
issue 15): the shipped two replicas of the router, each variant, the fallback and the
re-ranker land on both worker nodes, and removing one worker node under steady load keeps the
error rate ≤ 0.1% while Serve moves its replicas to the survivor. Errors per second around the
fault are printed for BENCHMARKS.md, never asserted as timings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import (
    SteadyLoad,
    head_and_two_workers,
    interactions,
    serve_replica_nodes,
    wait_http,
    wait_until,
)
from ray.cluster_utils import Cluster

from ray_app.broker.embedded import free_port
from ray_app.models.itemknn import ItemKNN
from ray_app.models.popularity import Popularity
from ray_app.registry.store import Registry
from ray_app.serving.app import build_app
from ray_app.serving.config import PROXY_HTTP_OPTIONS, ServeArgs, VariantSpec

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skip(
        reason="issues 14/15, not met yet: these assume two replicas of the router and each slot; "
        "they stay at one until admin changes reach every replica, and a node loss stalled "
        "the service ~55 s (BENCHMARKS.md, Replica loss)",
    ),
]

USERS = 200
K = 20
RATE = 50.0
SPREAD = ["ABRouter", "variant-A", "fallback", "ReRanker"]
"""Deployments whose two replicas must sit on different worker nodes."""
HEAL_TIMEOUT_S = 120.0
"""Liveness bound for Serve to notice the lost node and start replacements on the survivor."""


@pytest.fixture()
def cluster() -> Iterator[tuple[Cluster, list[Any]]]:
    """A head that runs only Serve's controller and proxy (0 CPUs) and two worker nodes."""
    # 2 CPUs each: after a node loss the survivor must hold every replica (0.1 CPU each)
    with head_and_two_workers({"num_cpus": 0}, {"num_cpus": 2}) as got:
        yield got


def _registry(root: Path) -> str:
    rng = np.random.default_rng(0)
    data = interactions(
        (f"u{u}", f"m{i}") for u in range(USERS) for i in rng.choice(80, size=12, replace=False)
    )
    reg = Registry(root)
    reg.register(ItemKNN().fit(data))
    reg.register(Popularity().fit(data))
    return str(reg.uri)


def _spread() -> bool:
    return all(len(set(serve_replica_nodes(d))) == 2 for d in SPREAD)


def test_multinode_serving_survives_losing_a_worker_node(
    cluster: tuple[Cluster, list[Any]], tmp_path: Path
) -> None:
    from ray import serve

    c, workers = cluster
    args = ServeArgs(
        registry=_registry(tmp_path / "registry"),
        variants=[VariantSpec(name="A", model="itemknn", weight=1.0)],
        kafka_bootstrap_servers="",
        rate_limit_per_min=10_000,
        watch_interval_s=0,
    )
    port = free_port()
    # One proxy, on the head: every node of this cluster shares one machine and so one port.
    serve.start(
        proxy_location="HeadOnly",
        http_options={"host": "127.0.0.1", "port": port, **PROXY_HTTP_OPTIONS},
    )
    serve.run(build_app(args), name="recommender", route_prefix="/", blocking=False)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/recommend/u1", timeout=180)
    wait_until(_spread, 60, 0.5, f"two nodes for each of {SPREAD}")

    # Lose the worker that does not hold the ingress (one replica: its loss is not covered).
    (ingress_node,) = serve_replica_nodes("Ingress")
    lost = next(w for w in workers if w.node_id != ingress_node)
    paths = [f"/recommend/u{u}?format=json&k={K}" for u in range(USERS)]
    with SteadyLoad(base, RATE, paths) as load:
        load.wait_sent(5.0)  # steady state under load before the fault
        t_fault = load.now()
        c.remove_node(lost, allow_graceful=False)

        def healed() -> bool:
            return all(
                len(n := serve_replica_nodes(d)) == 2 and lost.node_id not in n for d in SPREAD
            )

        wait_until(healed, HEAL_TIMEOUT_S, 0.5, "replicas replaced on the surviving node")
        t_healed = load.now()
        load.wait_sent(t_healed + 5.0)  # and serving from them
        t_end = t_healed + 5.0
    samples = load.samples

    def bad(s: Any) -> bool:
        return s.status != 200 or s.body is None or len(s.body["items"]) != K

    start = int(t_fault) - 5
    errors = np.bincount([int(s.due_s) - start for s in samples if bad(s)], minlength=1)
    fallbacks = np.bincount(
        [
            int(s.due_s) - start
            for s in samples
            if s.status == 200 and s.body and s.body["fallback"]
        ],
        minlength=1,
    )
    print(
        {
            "fault_at_s": round(t_fault, 1),
            "replaced_after_s": round(t_healed - t_fault, 1),
            "requests": len(samples),
            "errors": int(errors.sum()),
            "errors_per_s_from_fault_minus_5s": errors.tolist(),
            "fallbacks_per_s_from_fault_minus_5s": fallbacks.tolist(),
            "achieved_rate": round(len(samples) / t_end, 1),
            "error_kinds": dict(
                Counter(
                    (s.status, str(s.body and s.body.get("client_error")))
                    for s in samples
                    if bad(s)
                )
            ),
        }
    )
    assert errors.sum() <= 0.001 * len(samples), f"{errors.sum()} errors of {len(samples)}"
    tail = [s for s in samples if s.due_s >= t_end - 1.0]
    assert tail and all(s.status == 200 and s.body and not s.body["fallback"] for s in tail), (
        "not recovered"
    )
