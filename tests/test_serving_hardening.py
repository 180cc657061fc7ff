"""The ingress's HTTP surface as a hostile client sees it (issue 14's defects 1, 3, 6, 8, 9,
10): the real FastAPI app, middleware and ingress object in-process, stand-in graph handles."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import StubHandle, asgi_client, wait_until
from pydantic import ValidationError

from ray_app.serving import security
from ray_app.serving.answer import Answer
from ray_app.serving.breaker import Breaker
from ray_app.serving.config import ApiKey, ServeArgs, VariantSpec
from ray_app.serving.ingress import USER_ID_PATTERN, Ingress, IngressSettings, api
from ray_app.serving.router import RouterConfig, validate_weights
from ray_app.serving.security import public_reason, token_hash

TOP = [f"m{i}" for i in range(30)]
ADMIN = {"Authorization": "Bearer admin-secret"}
READER = {"Authorization": "Bearer reader-secret"}


class Graph:
    """Router and fallback stand-ins that count the calls reaching them."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.router_sleep_s = 0.0
        self.switch_error: Exception | None = None
        self.model = "ease"

    async def route_batch(self, user_ids: list[str], ks: list[int]) -> list[Answer]:
        self.calls.append("route_batch")
        await asyncio.sleep(self.router_sleep_s)
        return [
            Answer(items=TOP[:k], variant="A", model=self.model, model_version="v1") for k in ks
        ]

    async def recommend(self, user_id: str, k: int) -> Answer:
        self.calls.append("fallback")
        return Answer(items=TOP[::-1][:k], model="popularity", model_version="p1")

    async def describe(self) -> list[dict[str, Any]]:
        self.calls.append("describe")
        return [{"name": "A", "model": "ease", "version": "v1", "weight": 1.0}]

    async def set_weights(self, weights: dict[str, float]) -> dict[str, float]:
        self.calls.append("set_weights")
        return validate_weights(weights, ["A", "B"])

    async def switch(self, name: str, model: str, version: str | None) -> dict[str, Any]:
        assert self.switch_error is not None
        raise self.switch_error

    async def reload(self) -> list[dict[str, Any]]:
        return []


def build(graph: Graph, **args: Any) -> Any:
    """The ingress object as its replica holds it."""
    wrapped: Any = Ingress
    cls = wrapped.func_or_class.__mro__[1]  # the class under @serve.ingress
    obj = cls.__new__(cls)
    keys = [
        ApiKey(name="ops", role="admin", sha256=token_hash("admin-secret")),
        ApiKey(name="dash", role="reader", sha256=token_hash("reader-secret")),
    ]
    settings = IngressSettings.from_args(ServeArgs(registry="r", api_keys=keys, **args))
    handle = StubHandle(
        route_batch=graph.route_batch,
        recommend=graph.recommend,
        describe=graph.describe,
        set_weights=graph.set_weights,
        switch=graph.switch,
        reload=graph.reload,
    )
    cls.__init__(obj, router=handle, fallback=handle, settings=settings)
    obj.reconfigure({"max_batch_size": 8, "max_batches_in_flight": 2})
    return obj


@pytest.fixture
def graph() -> Graph:
    return Graph()


@pytest.fixture
def client(graph: Graph) -> Iterator[Any]:
    with asgi_client(api, build(graph)) as c:
        yield c
    security.STATE.keys = security.KeyStore(environ={})


# ---- defect 1: liveness and readiness are local; detail is for readers ----------------------
def test_healthz_and_readyz_never_leave_the_replica(client: Any, graph: Graph) -> None:
    for _ in range(50):
        assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 503  # no list to answer with yet
    graph.model = "popularity"  # the fallback model's full list arrives: the last resort
    assert client.get("/recommend/u1").status_code == 200
    graph.calls.clear()
    assert client.get("/readyz").status_code == 200
    assert graph.calls == []  # no variant, router or fallback call for either probe


def test_variant_detail_is_reader_only(client: Any) -> None:
    assert client.get("/admin/status").status_code == 401
    body = client.get("/admin/status", headers=READER).json()
    assert body["variants"][0]["version"] == "v1" and "reco_log" in body


# ---- defect 3: header size ------------------------------------------------------------------
def test_oversized_headers_get_431(client: Any) -> None:
    r = client.get("/recommend/u1", headers={"X-Padding": "a" * 20_000})
    assert r.status_code == 431 and "16384" in r.json()["detail"]
    assert client.get("/recommend/u1", headers={"X-Padding": "a" * 8_000}).status_code == 200


# ---- defect 6: weights ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        '{"weights": {"A": NaN}}',
        '{"weights": {"A": Infinity, "B": 1}}',
        '{"weights": {"A": -Infinity, "B": 1}}',
        '{"weights": {"A": 1e400}}',
        '{"weights": {"A": 1e300, "B": 1e300}}',
        '{"weights": {"A": "0.5"}}',
        '{"weights": {"A": true}}',
        '{"weights": {"A": null}}',
    ],
)
def test_only_finite_number_weights_are_accepted(client: Any, graph: Graph, raw: str) -> None:
    r = client.put(
        "/admin/weights", content=raw, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert "set_weights" not in graph.calls


def test_valid_weights_pass(client: Any) -> None:
    r = client.put("/admin/weights", json={"weights": {"A": 3, "B": 0.5}}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["weights"] == {"A": 3.0, "B": 0.5}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1", True, 1e7])
def test_weights_are_strict_in_every_config(bad: Any) -> None:
    with pytest.raises(ValueError):
        validate_weights({"A": bad, "B": 1.0}, ["A", "B"])
    with pytest.raises(ValidationError):
        RouterConfig(weights={"A": bad, "B": 1.0})
    with pytest.raises(ValidationError):
        VariantSpec(name="A", weight=bad)


# ---- defect 8: deadline between ingress and router -------------------------------------------
def test_a_hung_router_is_abandoned_at_the_deadline(graph: Graph) -> None:
    graph.router_sleep_s = 30.0
    with asgi_client(api, build(graph, deadline_s=0.1, router_deadline_s=0.3)) as c:
        t0 = time.monotonic()
        js = c.get("/recommend/u1", params={"format": "json"}).json()
        took = time.monotonic() - t0
    assert js["fallback_reason"] == "router_error" and js["items"] == TOP[::-1][:20]
    assert took < 5.0  # not the 30 s the router would hold it


# ---- defect 9: errors without internals -------------------------------------------------------
def test_a_refused_switch_names_no_server_path(client: Any, graph: Graph) -> None:
    graph.switch_error = RuntimeError(
        "signature mismatch for /srv/ray_app/data/registry/ease/v9/artifact/model.npz\n"
        'Traceback (most recent call last):\n  File "/opt/x.py", line 3, pid=4242 ip=10.0.0.7'
    )
    r = client.post("/admin/variants/A/model", json={"version": "v9"}, headers=ADMIN)
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert detail["reason"] == "RuntimeError: signature mismatch for model.npz"
    assert detail["still_serving"] == {"model": "ease", "version": "v1"}
    assert "/srv" not in r.text and "Traceback" not in r.text


def test_public_reason_is_one_line_of_the_innermost_error() -> None:
    class Wrapped(Exception):
        def __init__(self, cause: BaseException) -> None:
            super().__init__("ray::ABRouter.reload() (pid=1, ip=10.0.0.1)\n  File ...")
            self.cause = cause

    inner = FileNotFoundError("s3://bucket/reg/ease/v2/manifest.json missing\nmore")
    assert public_reason(Wrapped(inner)) == "FileNotFoundError: manifest.json missing"


def test_a_422_does_not_echo_the_input(client: Any) -> None:
    r = client.get("/recommend/" + "x" * 10_000)
    assert r.status_code == 422 and len(r.content) < 500 and "xxxxxxxxxx" not in r.text


# ---- defect 10 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("k", ["1_0", "+5", " 5", "5 ", "0x5", "１", "1e1", "-1", "0", "101"])
def test_k_is_plain_digits_in_range(client: Any, k: str) -> None:
    assert client.get("/recommend/u1", params={"k": k}).status_code == 422


def test_k_in_digits_is_accepted(client: Any) -> None:
    assert client.get("/recommend/u1", params={"k": "7"}).text.count(",") == 6


@pytest.mark.parametrize("user", [".", "..", ".hidden"])
def test_dot_ids_are_not_user_ids(client: Any, user: str) -> None:
    assert client.get(f"/recommend/{user.replace('.', '%2E')}").status_code in (404, 422)
    assert re.match(USER_ID_PATTERN, user) is None


def test_a_trailing_slash_is_not_redirected(client: Any) -> None:
    r = client.get("/recommend/u1/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers


def test_refused_admin_calls_are_logged_with_principal_and_client(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ray.serve.audit"):
        client.put("/admin/weights", json={"weights": {"A": 1}}, headers=READER)
        client.put(
            "/admin/weights", json={"weights": {"A": 1}}, headers={"Authorization": "Bearer x"}
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "ray.serve.audit"]
    assert any("dash" in ln and "203.0.113.7" in ln and "admin" in ln for ln in lines), lines
    assert any("unknown bearer token" in ln and "203.0.113.7" in ln for ln in lines), lines


def test_the_openapi_documents_every_error_status(client: Any) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/recommend/{user_id}"]["get"]["responses"]) >= {
        "200",
        "401",
        "422",
        "429",
        "431",
        "503",
    }
    assert set(paths["/admin/weights"]["put"]["responses"]) >= {"200", "401", "403", "422"}
    assert "409" in paths["/admin/variants/{name}/model"]["post"]["responses"]
    assert "503" in paths["/readyz"]["get"]["responses"]


def test_a_failing_router_is_skipped_until_a_probe_succeeds(graph: Graph) -> None:
    graph.router_sleep_s = 30.0
    with asgi_client(api, build(graph, deadline_s=0.1, router_deadline_s=0.3)) as c:
        for _ in range(3):  # three deadlines missed: the breaker opens
            assert c.get("/recommend/u1").status_code == 200
        graph.calls.clear()
        js = [c.get("/recommend/u1", params={"format": "json"}).json() for _ in range(5)]
        # answered by the fallback without a router call (so without waiting out its deadline)
        assert "route_batch" not in graph.calls and all(j["fallback"] for j in js)
        graph.router_sleep_s = 0.0

        def probed() -> bool:  # after open_s one call probes the router and closes it again
            return c.get("/recommend/u1", params={"format": "json"}).json()["model"] == "ease"

        wait_until(probed, timeout=10, interval=0.2, what="the breaker to close")


def test_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    b = Breaker(failures=2, open_s=1.0)
    b.record(ok=False, now=0.0)
    assert b.allow(now=0.0)
    b.record(ok=False, now=0.0)
    assert not b.allow(now=0.5)
    assert b.allow(now=1.1) and not b.allow(now=1.1)  # one probe at a time
    b.record(ok=True, now=1.2)
    assert b.allow(now=1.2)
