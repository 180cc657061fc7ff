"""Serving building blocks without Ray: assignment, MMR, keys, reco logging,
the last-resort list, user_config validation and how build_app wires values."""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from ray.serve import Application

from ray_app.config import ConfigError
from ray_app.events.json_dialect import parse_json
from ray_app.events.model import RecoEvent, ValidationRules
from ray_app.events.reco import format_server, served_reco_event
from ray_app.models.base import Interactions
from ray_app.models.popularity import Popularity
from ray_app.registry.signing import SignatureError
from ray_app.registry.store import Registry, read_item_metadata, write_item_metadata
from ray_app.serving.answer import Answer
from ray_app.serving.app import build_app
from ray_app.serving.config import ApiKey, ServeArgs, VariantSpec, updated_config
from ray_app.serving.ingress import IngressConfig
from ray_app.serving.last_resort import LastResort
from ray_app.serving.model_server import ModelServerConfig
from ray_app.serving.provenance import RecoLogger, TraceStore
from ray_app.serving.reranker import ReRankerConfig, mmr
from ray_app.serving.router import RouterConfig, assign, validate_weights
from ray_app.serving.security import KeyStore, Principal, allows, token_hash


@given(st.text(min_size=1, max_size=64))
def test_assignment_is_stable(user: str) -> None:
    w = {"A": 0.5, "B": 0.5}
    assert assign(user, "s", w) == assign(user, "s", dict(w))


def test_assignment_split_and_salt() -> None:
    users = [str(i) for i in range(20_000)]
    counts = Counter(assign(u, "exp-1", {"A": 0.8, "B": 0.2}) for u in users)
    assert abs(counts["A"] / len(users) - 0.8) < 0.02
    # another salt re-randomises: many users change slot even with equal weights
    moved = sum(assign(u, "x", {"A": 1, "B": 1}) != assign(u, "y", {"A": 1, "B": 1}) for u in users)
    assert 0.4 < moved / len(users) < 0.6
    assert {assign(u, "s", {"A": 0.0, "B": 1.0}) for u in users[:500]} == {"B"}


def test_validate_weights_messages() -> None:
    assert validate_weights({"A": 2}, ["A", "B"]) == {"A": 2.0, "B": 0.0}
    with pytest.raises(ValueError, match="unknown variant"):
        validate_weights({"C": 1}, ["A", "B"])
    with pytest.raises(ValueError, match="> 0"):
        validate_weights({"A": 0}, ["A", "B"])


def test_mmr_diversifies_and_zero_is_identity() -> None:
    items = ["a1", "a2", "a3", "b1", "c1"]
    genres = {"a1": ["Action"], "a2": ["Action"], "a3": ["Action"], "b1": ["Drama"], "c1": ["Kids"]}
    assert mmr(items, genres, 3, 0.0) == ["a1", "a2", "a3"]
    assert mmr(items, {}, 3, 0.9) == ["a1", "a2", "a3"]
    out = mmr(items, genres, 3, 0.7)
    assert out[0] == "a1" and set(out) == {"a1", "b1", "c1"}


def test_keystore_roles_and_env() -> None:
    env = {
        "RAY_APP_API_KEYS": f"ci:reader:{token_hash('r-token')}",
        "RAY_APP_ADMIN_TOKEN": "a-token",
    }
    ks = KeyStore([ApiKey(name="ops", role="admin", sha256=token_hash("o"))], environ=env)
    assert ks.lookup("r-token") == Principal("ci", "reader")
    assert ks.lookup("a-token") == Principal("admin", "admin")
    assert ks.lookup("o") == Principal("ops", "admin")
    assert ks.lookup("nope") is None
    assert allows(Principal("x", "admin"), "reader") and not allows(
        Principal("x", "reader"), "admin"
    )
    with pytest.raises(ValueError, match="name:role:sha256hex"):
        KeyStore(environ={"RAY_APP_API_KEYS": "bad:root:abc"})


def test_serve_args_default_variant_and_checks() -> None:
    a = ServeArgs(registry="r", model="popularity")
    assert [(v.name, v.model, v.weight) for v in a.variants] == [("A", "popularity", 1.0)]
    with pytest.raises(ValueError, match="unique"):
        ServeArgs(variants=[VariantSpec(name="A"), VariantSpec(name="A")])


def _event(i: int = 0, user: str = "u1") -> RecoEvent:
    return served_reco_event(
        user_id=user,
        items=["m1", "m2"],
        variant="A",
        model="itemknn",
        version="v1",
        latency_ms=3.25,
        request_id=f"{i:032x}",
    )


def test_reco_logger_never_blocks_when_kafka_is_down() -> None:
    rl = RecoLogger("127.0.0.1:1", "t", maxsize=5)  # nothing listens on port 1
    t0 = time.perf_counter()
    accepted = [rl.log(_event(i)) for i in range(50)]
    # the sender never gets a producer, so it takes nothing out: exactly the buffer fills
    assert time.perf_counter() - t0 < 0.5
    assert sum(accepted) == 5 and rl.dropped == 45
    rl.close()
    assert not RecoLogger("", "t").log(_event())  # disabled: nothing queued


class _Sent:
    """A stand-in KafkaProducer that records what it was given."""

    def __init__(self) -> None:
        self.values: list[tuple[str, bytes]] = []

    def send(self, topic: str, value: bytes) -> Any:
        self.values.append((topic, value))
        return self

    def add_errback(self, fn: Any) -> None:
        pass

    def flush(self, timeout: float) -> None:
        pass

    def close(self, timeout: float) -> None:
        pass


def test_reco_logger_sends_json_dialect_records() -> None:
    sent = _Sent()

    class Logger(RecoLogger):
        def _producer(self) -> Any:
            return sent

    rl = Logger("broker:9092", "events.reco_responses")
    events = [_event(1, "7"), _event(2, "u-8")]
    for e in events:
        assert rl.log(e)
    deadline = time.monotonic() + 10
    while len(sent.values) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    rl.close()
    assert [t for t, _ in sent.values] == ["events.reco_responses"] * 2
    rules = ValidationRules(require_numeric_user_id=False)
    # what ingest reads back is the event the ingress built, v2 fields included
    assert [parse_json(v, kind="reco_responses", rules=rules) for _, v in sent.values] == events


def test_trace_shows_the_answer_and_the_event() -> None:
    ts = TraceStore(maxsize=3)
    answers = [
        Answer(
            user_id="u1",
            items=["m1"],
            variant="A",
            model="ease",
            model_version="v1",
            request_id=f"{i:032x}",
            latency_ms=2.5,
        )
        for i in range(5)
    ]
    for a in answers:
        ts.put(a, _event())
    assert ts.get(answers[0].request_id or "") is None  # bounded: the oldest went first
    rec = ts.get(answers[4].request_id or "")
    assert rec is not None
    assert {k: rec[k] for k in Answer.model_fields} == answers[4].model_dump()
    assert rec["server"] == format_server("A", "itemknn", "v1") and rec["status"] == 200
    with pytest.raises(ValueError, match="request_id"):
        ts.put(Answer(), _event())


def test_last_resort_keeps_full_lists_of_the_configured_fallback_model() -> None:
    lr = LastResort(fallback_model="cheap", min_items=3)
    assert lr.items(5) == []
    lr.offer(Answer(items=["a", "b", "c", "d"], model="popularity"))  # not the fallback
    assert lr.items(5) == []
    lr.offer(Answer(items=["a", "b", "c", "d"], model="cheap"))
    lr.offer(Answer(items=["x", "y"], model="cheap"))  # too short to replace it
    assert lr.items(5) == ["a", "b", "c", "d"] and lr.items(2) == ["a", "b"]


@pytest.mark.parametrize(
    ("config_class", "user_config", "field"),
    [
        (ReRankerConfig, {"diversty": 0.3}, "diversty"),
        (ReRankerConfig, {"diversity": 1.5}, "diversity"),
        (RouterConfig, {"weight": {"A": 1.0}}, "weight"),
        (ModelServerConfig, {"fault_injection": {"raise": True}}, "fault_injection"),
        (IngressConfig, {"max_batch_size": 0}, "max_batch_size"),
    ],
)
def test_a_bad_user_config_fails_at_start_and_is_refused_live(
    config_class: type[BaseModel], user_config: dict[str, Any], field: str, caplog: Any
) -> None:
    with pytest.raises(ConfigError, match=f"^Dep user_config: {field}") as err:
        updated_config(None, config_class, user_config, "Dep")
    assert "\n" not in str(err.value)
    current = config_class.model_validate(
        {"weights": {"A": 1.0}} if config_class is RouterConfig else {}
    )
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        assert updated_config(current, config_class, user_config, "Dep") is current
    assert field in caplog.text


def test_router_config_checks_weights_against_the_slots() -> None:
    ok = updated_config(None, RouterConfig, {"weights": {"A": 2}}, "R", {"slots": ["A", "B"]})
    assert ok.weights == {"A": 2.0, "B": 0.0}
    with pytest.raises(ConfigError, match=r"weights.*unknown variant"):
        updated_config(None, RouterConfig, {"weights": {"C": 1}}, "R", {"slots": ["A", "B"]})


def _deployments(app: Application) -> dict[str, Any]:
    """Every deployment of an app graph by name (bound, not started)."""
    found: dict[str, Any] = {}

    def walk(value: Any) -> None:
        if isinstance(value, Application):
            d: Any = value._bound_deployment
            found[d.name] = d
            for v in [*d.init_args, *d.init_kwargs.values()]:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    walk(app)
    return found


def test_build_app_puts_each_value_in_once() -> None:
    args = ServeArgs(
        registry="r",
        variants=[
            VariantSpec(name="A", model="ease", version="v1", weight=0.9, follow="production"),
            VariantSpec(name="B", model="itemknn", weight=0.1),
        ],
        deadline_s=0.3,
        diversity=0.4,
        novelty=0.25,
        fallback_model="cheap",
        max_batch_size=8,
    )
    deps = _deployments(build_app(args))
    assert set(deps) == {"Ingress", "ABRouter", "ReRanker", "variant-A", "variant-B", "fallback"}
    for name, d in deps.items():
        assert d.init_args == (), name  # keywords, so this test can see what goes where
        given_at_start = set(d.init_kwargs)
        for v in d.init_kwargs.values():
            if isinstance(v, BaseModel):
                given_at_start |= set(type(v).model_fields)
        assert not given_at_start & set(d.user_config), (name, given_at_start, d.user_config)
    assert RouterConfig.model_validate(deps["ABRouter"].user_config) == RouterConfig(
        weights={"A": 0.9, "B": 0.1}, salt="exp-1", deadline_s=0.3
    )
    rerank = ReRankerConfig.model_validate(deps["ReRanker"].user_config)
    assert (rerank.diversity, rerank.novelty, rerank.popularity_model) == (0.4, 0.25, "cheap")
    assert ModelServerConfig.model_validate(deps["variant-A"].user_config) == ModelServerConfig(
        version="v1", follow="production", watch_interval_s=30.0
    )
    assert deps["variant-A"].init_kwargs["model"] == "ease"
    assert deps["fallback"].init_kwargs["model"] == "cheap"
    assert deps["Ingress"].init_kwargs["settings"].fallback_model == "cheap"
    assert IngressConfig.model_validate(deps["Ingress"].user_config).max_batch_size == 8


def test_item_metadata_signed(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    frame = pd.DataFrame({"user_id": ["a"], "item_id": ["x"]})
    reg.register(Popularity().fit(Interactions.from_frame(frame)))
    assert read_item_metadata(reg) == {}
    write_item_metadata(reg, {"x": ["Drama"]})
    assert read_item_metadata(reg) == {"x": ["Drama"]}
    assert reg.models() == ["popularity"]
    p = tmp_path / "_item_metadata.json"
    p.write_text(p.read_text().replace("Drama", "Drana"))
    with pytest.raises(SignatureError, match="_item_metadata"):
        read_item_metadata(reg)
