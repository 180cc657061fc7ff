"""Retraining without a person: gate → register → canary → promote; a broken model is rolled back.

Real parts: snapshot files, Ray (training task), the registry, and the Serve app over HTTP with
its admin API; traffic comes from a background thread of real requests.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers import wait_http, write_ratings_snapshot

from ray_app.broker.embedded import free_port
from ray_app.models.itemknn import ItemKNN
from ray_app.registry import lifecycle
from ray_app.registry.store import Registry
from ray_app.retraining.config import RetrainConfig
from ray_app.retraining.control import HttpServiceControl
from ray_app.retraining.cycle import run_cycle
from ray_app.serving.config import ApiKey, ServeArgs, VariantSpec
from ray_app.serving.security import token_hash
from ray_app.training.job import ModelSpec, TrainConfig, run_training

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.realdata]
TOKEN = "retrain-admin-token"


@pytest.fixture(scope="module")
def world(
    ray_session: None, ml100k: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    from ray import serve

    from ray_app.serving.run import start_serving

    tmp = tmp_path_factory.mktemp("retrain")
    snaps, registry = tmp / "snapshots", str(tmp / "registry")
    ratings = ml100k.ratings[ml100k.ratings.user_id.astype(int) <= 300].sort_values("timestamp")
    bounds = np.linspace(0, len(ratings), 5).astype(int)
    chunks = [ratings.iloc[a:b] for a, b in itertools.pairwise(bounds)]
    nxt = write_ratings_snapshot(snaps, chunks[0], first=0)
    nxt = write_ratings_snapshot(snaps, chunks[1], first=nxt)
    run_training(TrainConfig(snapshot_dir=snaps, registry=registry, catalog_dataset=None))
    port = free_port()
    args = ServeArgs(
        registry=registry,
        variants=[
            VariantSpec(name="A", model="itemknn", weight=1.0),
            VariantSpec(name="canary", model="itemknn", weight=0.0),
        ],
        api_keys=[ApiKey(name="retrainer", role="admin", sha256=token_hash(TOKEN))],
        rate_limit_per_min=10_000,
        deadline_s=2.0,
        router_deadline_s=5.0,  # above the variant deadline, as ServeArgs requires
    )
    serve.shutdown()  # http_options apply only when Serve starts; an earlier module's may linger
    start_serving(args, "127.0.0.1", port)
    base = f"http://127.0.0.1:{port}"
    users = sorted(ratings.user_id.unique(), key=int)
    stop = threading.Event()
    failures: list[str] = []

    def traffic() -> None:
        with httpx.Client(base_url=base, timeout=30) as c:
            i = 0
            while not stop.is_set():
                r = c.get(f"/recommend/{users[i % len(users)]}")
                if r.status_code != 200 or len(r.text.split(",")) != 20:
                    failures.append(f"{r.status_code} {r.text[:80]}")
                i += 1
                time.sleep(0.01)

    wait_http(f"{base}/healthz")
    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    yield {
        "snaps": snaps,
        "registry": registry,
        "base": base,
        "chunks": chunks,
        "next": nxt,
        "failures": failures,
    }
    stop.set()
    t.join(timeout=30)
    serve.shutdown()


def _config(world: dict[str, Any]) -> RetrainConfig:
    return RetrainConfig(
        snapshot_dir=world["snaps"],
        registry=world["registry"],
        model=ModelSpec(name="itemknn"),
        catalog_dataset=None,
        gate_tolerance=0.05,
        canary_weight=0.3,
        canary_min_requests=40,
        canary_max_wait_s=120,
        canary_poll_s=0.5,
    )


def test_promotes_a_healthy_model_then_rolls_back_a_broken_one(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    control = HttpServiceControl(world["base"], TOKEN)
    reg = Registry(world["registry"])
    v1 = next(v for v in control.variants() if v["name"] == "A")["version"]

    skipped = run_cycle(_config(world), control)
    assert skipped.outcome == "skipped", "no new data, no new model"

    world["next"] = write_ratings_snapshot(world["snaps"], world["chunks"][2], first=world["next"])
    first = run_cycle(_config(world), control)
    assert first.outcome == "promoted", first.reason
    v2 = first.version
    assert v2 and v2 != v1
    now = {v["name"]: v for v in control.variants()}
    assert now["A"]["version"] == v2 and now["canary"]["weight"] == 0.0
    assert reg.aliases("itemknn")["production"] == v2
    steps = [e["step"] for e in lifecycle.events(reg, "itemknn", v2)]
    assert steps == [
        "checked_data",
        "trained",
        "gate_passed",
        "registered",
        "canary_started",
        "promoted",
    ]
    assert reg.read_manifest("itemknn", v2)["retrain"]["parent_version"] == v1

    # A model whose saved artifact is broken (NaN similarities, as from a serialisation bug):
    # it verifies, loads and passes the offline gate (evaluated before saving), but scoring
    # raises on NaN, so the canary's answers come from the fallback.
    original = ItemKNN.save

    def save_broken(self: ItemKNN, directory: str | Path) -> list[str]:
        files = original(self, directory)
        state_file = Path(directory) / "state.npz"
        with np.load(state_file, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
        state["similarity_data"] = np.full_like(state["similarity_data"], np.nan)
        np.savez(state_file, **state)
        return files

    monkeypatch.setattr(ItemKNN, "save", save_broken)
    world["next"] = write_ratings_snapshot(world["snaps"], world["chunks"][3], first=world["next"])
    second = run_cycle(_config(world), control)
    monkeypatch.undo()
    assert second.outcome == "rolled_back", (second.reason, str(second.steps[-1]))
    assert "fallback rate" in second.reason
    now = {v["name"]: v for v in control.variants()}
    assert now["A"]["version"] == v2, "the control still serves the promoted model"
    assert now["canary"]["weight"] == 0.0
    assert reg.aliases("itemknn")["production"] == v2
    assert [e["step"] for e in lifecycle.events(reg, "itemknn", second.version or "")][
        -1
    ] == "rolled_back"
    assert not world["failures"], f"users saw failures: {world['failures'][:3]}"
