"""Per-user limits and per-client quotas: the buckets, who is counted against what (defect 7:
the limit locks victims out), and both limits held cluster-wide by two ingress replicas over
real HTTP (rotating user ids is caught)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import asgi_client, interactions
from test_serving_hardening import Graph, build

from ray_app.serving.config import ClientAuth, ClientKey
from ray_app.serving.ingress import api
from ray_app.serving.quotas import QuotaBoard, TokenBuckets
from ray_app.serving.security import token_hash


def test_buckets_take_all_or_nothing_and_refill() -> None:
    b = TokenBuckets()
    both = (("client:c", 60), ("user:u", 2))
    assert b.take(both, now=0.0) == 0.0 and b.take(both, now=0.0) == 0.0
    wait = b.take(both, now=0.0)  # the user bucket is empty: nothing is taken
    assert 29.9 < wait <= 30.0
    assert b.wait((("client:c", 60),), now=0.0) == 0.0  # 58 of 60 left, not 57
    assert b.take((("client:c", 60), ("user:v", 2)), now=0.0) == 0.0
    assert b.take(both, now=30.01) == 0.0  # one user token a half-minute


def test_buckets_are_bounded() -> None:
    b = TokenBuckets(max_keys=100)
    for i in range(1000):
        b.take(((f"user:{i}", 5),), now=0.0)
    assert len(b._buckets) == 100


def test_the_board_answers_a_batch_in_order() -> None:
    board = QuotaBoard()
    waits = board.take_batch([(("user:a", 1),), (("user:a", 1),), (("user:b", 1),)])
    assert waits[0] == 0.0 and waits[1] > 0 and waits[2] == 0.0


def test_rotating_user_ids_hits_the_client_quota() -> None:
    with asgi_client(api, build(Graph(), rate_limit_per_min=100, client_quota_per_min=30)) as c:
        codes = Counter(c.get(f"/recommend/u{i}").status_code for i in range(40))
    assert codes == {200: 30, 429: 10}


def test_an_anonymous_flood_cannot_lock_out_the_authenticated_user() -> None:
    keys = [
        ClientKey(name="gateway", sha256=token_hash("gw-key")),
        ClientKey(name="small", sha256=token_hash("small-key"), quota_per_min=3),
    ]
    obj = build(Graph(), rate_limit_per_min=5, client_auth=ClientAuth(api_keys=keys))
    gw = {"Authorization": "Bearer gw-key"}
    with asgi_client(api, obj) as c:
        flood = Counter(c.get("/recommend/victim").status_code for _ in range(20))
        assert flood == {200: 5, 429: 15}
        r = c.get("/recommend/victim")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        # the victim's own calls, through its gateway's key, have their own bucket
        assert [c.get("/recommend/victim", headers=gw).status_code for _ in range(5)] == [200] * 5
        assert c.get("/recommend/victim", headers=gw).status_code == 429  # and their own limit
        # a key's own quota, whatever user ids it names
        small = {"Authorization": "Bearer small-key"}
        got = [c.get(f"/recommend/s{i}", headers=small).status_code for i in range(5)]
        assert got == [200, 200, 200, 429, 429]


# ---- over real HTTP, two ingress replicas ---------------------------------------------------
@pytest.fixture(scope="module")
def two_replicas(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ray import serve
    from ray.serve.deployment import Application

    from ray_app.broker.embedded import free_port
    from ray_app.models.popularity import Popularity
    from ray_app.registry.store import Registry
    from ray_app.serving.app import build_app
    from ray_app.serving.config import ServeArgs

    root = tmp_path_factory.mktemp("quotas") / "registry"
    reg = Registry(root)
    reg.register(Popularity().fit(interactions((f"u{u}", f"m{u % 40}") for u in range(200))))
    args = ServeArgs(
        registry=str(root), model="popularity", rate_limit_per_min=12, client_quota_per_min=30
    )
    app: Any = build_app(args)
    # What `deployments: [{name: Ingress, num_replicas: 2}]` in serve_config.yaml does.
    two = Application(app._bound_deployment.options(num_replicas=2))
    port = free_port()
    serve.shutdown()  # http_options apply only when Serve starts; an earlier module's may linger
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(two, name="quotas", route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def _statuses(base: str, n: int, path: str) -> Counter[int]:
    codes: Counter[int] = Counter()
    with httpx.Client(base_url=base, timeout=30) as c:
        for i in range(n):
            codes[c.get(path.format(i=i)).status_code] += 1
    return codes


@pytest.mark.integration
def test_both_limits_hold_across_two_ingress_replicas(two_replicas: str) -> None:
    from ray import serve
    from ray.serve.schema import ReplicaState

    ingress = serve.status().applications["quotas"].deployments["Ingress"]
    assert ingress.replica_states.get(ReplicaState.RUNNING) == 2
    t0 = time.monotonic()
    # One user: 12/min cluster-wide, not 12 per replica (plus what refills while it runs:
    # 0.2 tokens/s; one replica alone would allow 24).
    user = _statuses(two_replicas, 36, "/recommend/u7")
    refill = (time.monotonic() - t0) * 12 / 60
    assert 12 <= user[200] <= 12 + refill + 1 and user[200] + user[429] == 36, (user, refill)
    # Rotating ids from one address: the client's 30/min (18 left after the above) holds.
    rotating = _statuses(two_replicas, 40, "/recommend/r{i}")
    refill = (time.monotonic() - t0) * 30 / 60
    assert 18 <= rotating[200] <= 18 + refill + 1, (rotating, refill)
    assert rotating[200] + rotating[429] == 40
