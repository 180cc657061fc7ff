"""The ingress's answer path without Ray or HTTP: stand-in router and fallback handles, the
real batcher, trace store and last-resort list."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from helpers import StubHandle

from ray_app.events.reco import format_server
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
    settings = IngressSettings.from_args(ServeArgs(registry="r", **args))
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

    # a full list from the model named "cheap" passes by, then nothing behind the ingress works
    _, _, body = in_one_loop(
        lambda: answer(obj, "u1", 20), break_both, lambda: answer(obj, "u2", 5)
    )
    assert body["fallback_reason"] == "router_error" and body["model"] is None
    assert body["items"] == (TOP[:5] if kept else [])
