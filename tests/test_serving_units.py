"""Serving building blocks without Ray: assignment, MMR, rate limits, keys, reco logging."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ray_app.models.base import Interactions
from ray_app.models.popularity import Popularity
from ray_app.registry.signing import SignatureError
from ray_app.registry.store import Registry, read_item_metadata, write_item_metadata
from ray_app.serving.config import ApiKey, ServeArgs, VariantSpec
from ray_app.serving.provenance import RecoLogger, TraceStore
from ray_app.serving.reranker import mmr
from ray_app.serving.router import assign, validate_weights
from ray_app.serving.security import KeyStore, Principal, RateLimiter, allows, token_hash


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


def test_rate_limiter_bucket() -> None:
    rl = RateLimiter(per_min=60)
    assert all(rl.acquire("u", now=0.0) == 0.0 for _ in range(60))
    wait = rl.acquire("u", now=0.0)
    assert 0.9 < wait <= 1.0
    assert rl.acquire("u", now=1.01) == 0.0  # one token a second refills
    assert rl.acquire("other", now=0.0) == 0.0


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


def test_reco_logger_never_blocks_when_kafka_is_down() -> None:
    rl = RecoLogger("127.0.0.1:1", "t", maxsize=5)  # nothing listens on port 1
    t0 = time.perf_counter()
    accepted = [rl.log({"i": i}) for i in range(50)]
    assert time.perf_counter() - t0 < 0.5
    assert sum(accepted) <= 6 and rl.dropped >= 44
    rl.close()
    assert not RecoLogger("", "t").log({"i": 1})  # disabled: nothing queued


def test_trace_store_is_bounded() -> None:
    ts = TraceStore(maxsize=3)
    for i in range(5):
        ts.put(str(i), {"i": i})
    assert ts.get("0") is None and ts.get("4") == {"i": 4}


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
