"""The ingress's answer path without Ray or HTTP: stand-in router and fallback handles, the
real batcher, trace store and last-resort list."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import StubHandle, interactions

from ray_app.events.reco import format_server
from ray_app.models.popularity import Popularity
from ray_app.registry.store import Registry
from ray_app.serving.answer import Answer
from ray_app.serving.config import ServeArgs
from ray_app.serving.ingress import Ingress, IngressSettings

TOP = [f"m{i}" for i in range(20)]


class Graph:
    """Router and fallback stand-ins whose failures a test switches on and off."""

    def __init__(self) -> None:
        self.router_fails = False
        self.fallback_fails = False
        self.router_answer = Answer(
            items=TOP, variant="A", model="itemknn", model_version="v1", known_user=True
        )

    async def route_batch(self, user_ids: list[str], ks: list[int]) -> list[Answer]:
        if self.router_fails:
            raise RuntimeError("router replica died")
        return [self.router_answer.model_copy(update={"items": TOP[:k]}) for k in ks]

    async def recommend(self, user_id: str, k: int) -> Answer:
        if self.fallback_fails:
            raise RuntimeError("fallback replica died")
        return Answer(items=TOP[::-1][:k], model="cheap", model_version="p1", known_user=True)


def ingress(graph: Graph, **args: Any) -> Any:
    """The ingress as its replica holds it, minus Serve's ASGI wrapper (which needs Ray)."""
    wrapped: Any = Ingress
    cls = wrapped.func_or_class.__mro__[1]  # the class under @serve.ingress
    obj = cls.__new__(cls)
    settings = IngressSettings.from_args(ServeArgs(**{"registry": "r", **args}))
    cls.__init__(
        obj,
        router=StubHandle(route_batch=graph.route_batch),
        fallback=StubHandle(recommend=graph.recommend),
        settings=settings,
    )
    obj.reconfigure({"max_batch_size": 4, "max_batches_in_flight": 1})
    return obj


async def answer(obj: Any, user_id: str, k: int, request_id: str = "r-1") -> dict[str, Any]:
    resp = await obj._answer(user_id, k, request_id, json_body=True, t0=time.perf_counter())
    body: dict[str, Any] = json.loads(resp.body)
    assert body["request_id"] == request_id
    return body


def in_one_loop(*calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run the calls in order on one event loop, as on a replica (the batcher is bound to it)."""

    async def run() -> list[Any]:
        return [await call() for call in calls]

    return asyncio.run(run())


def test_the_router_answer_is_the_json_body_and_the_trace() -> None:
    obj = ingress(Graph())
    body, text = in_one_loop(
        lambda: answer(obj, "u1", 5),
        lambda: obj._answer("u1", 3, "r-2", json_body=False, t0=time.perf_counter()),
    )
    assert body == {
        "user_id": "u1",
        "items": TOP[:5],
        "variant": "A",
        "model": "itemknn",
        "model_version": "v1",
        "known_user": True,
        "fallback": False,
        "fallback_reason": None,
        "request_id": "r-1",
        "latency_ms": body["latency_ms"],
    }
    assert isinstance(body["latency_ms"], float)
    trace = obj.traces.get(body["request_id"])
    assert {k: trace[k] for k in body} == body
    assert trace["server"] == format_server("A", "itemknn", "v1")
    assert (trace["latency_ms"], trace["ab_variant"]) == (body["latency_ms"], "A")
    assert text.body.decode() == ",".join(TOP[:3])


def test_router_failure_answers_from_the_fallback_model() -> None:
    graph = Graph()
    graph.router_fails = True
    obj = ingress(graph)
    (body,) = in_one_loop(lambda: answer(obj, "u1", 4))
    assert body["items"] == TOP[::-1][:4] and body["model"] == "cheap"
    assert body["variant"] is None and not body["known_user"]
    assert body["fallback"] and body["fallback_reason"] == "router_error"


@pytest.mark.parametrize(("fallback_model", "kept"), [("cheap", True), ("popularity", False)])
def test_the_last_resort_list_comes_from_the_configured_fallback_model(
    fallback_model: str, kept: bool
) -> None:
    graph = Graph()
    graph.router_answer = Answer(items=TOP, variant="A", model="cheap", model_version="p1")
    obj = ingress(graph, fallback_model=fallback_model)

    async def break_both() -> None:
        graph.router_fails = graph.fallback_fails = True

    async def raw() -> Any:
        return await obj._answer("u2", 5, "r-2", json_body=True, t0=time.perf_counter())

    # a full list from the model named "cheap" passes by, then nothing behind the ingress works
    _, _, resp = in_one_loop(lambda: answer(obj, "u1", 20), break_both, raw)
    if kept:
        body = json.loads(resp.body)
        assert body["items"] == TOP[:5] and body["model"] == "cheap"
        assert body["model_version"] == "p1" and body["fallback_reason"] == "router_error"
    else:  # no list of the configured fallback model was ever seen: never an empty 200
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"


def test_an_empty_answer_is_never_a_200(tmp_path: Path) -> None:
    """Router and fallback reachable but empty (cold replicas missed their deadlines): the
    ingress answers from the list it seeded from the registry at start, else 503."""

    class ColdGraph(Graph):
        async def route_batch(self, user_ids: list[str], ks: list[int]) -> list[Answer]:
            empty = Answer(variant="A", fallback=True, fallback_reason="timeout")
            return [empty for _ in ks]

    graph = ColdGraph()
    cold = ingress(graph)
    (resp,) = in_one_loop(
        lambda: cold._answer("u1", 5, "r-1", json_body=False, t0=time.perf_counter())
    )
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"

    registry = Registry(tmp_path / "registry")
    pop = Popularity().fit(
        interactions([(f"u{u}", f"m{i}") for u in range(9) for i in range(u + 1)])
    )
    version = registry.register(pop).version
    seeded = ingress(graph, registry=str(registry.uri))
    (body,) = in_one_loop(lambda: answer(seeded, "u1", 5))
    assert body["items"] == [f"m{i}" for i in range(5)]
    assert body["model"] == "popularity" and body["model_version"] == version
    assert body["fallback"] and body["fallback_reason"] == "timeout" and body["variant"] == "A"
