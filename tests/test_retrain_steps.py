"""The retraining cycle's steps with a fake service and a fake training step (no Ray, no HTTP).

Every outcome of :func:`run_cycle` (skipped, gate_failed, refused, rolled_back, promoted) and
the errors a user must fix (a slot missing, a different model in the control slot).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import FakeService, fast_retrain_config, interactions, write_ratings_snapshot

from ray_app.models.popularity import Popularity
from ray_app.registry import lifecycle
from ray_app.registry.store import Registry
from ray_app.retraining.config import RetrainConfig
from ray_app.retraining.control import MissingSlot
from ray_app.retraining.cycle import (
    Candidate,
    ModelMismatch,
    Serving,
    offline_gate,
    run_cycle,
)
from ray_app.snapshots.read import snapshot_files, snapshot_provenance
from ray_app.training.job import ModelSpec, TrainedModel

SERVING_NDCG = 0.30


def _model() -> Popularity:
    return Popularity().fit(interactions([("u1", "m1"), ("u2", "m1"), ("u2", "m2")]))


def _ratings(users: range) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [str(u) for u in users],
            "item_id": ["m1"] * len(users),
            "rating": [4.0] * len(users),
            "timestamp": [1_700_000_000 + u for u in users],
        }
    )


@pytest.fixture()
def world(tmp_path: Path) -> dict[str, Any]:
    """One committed batch, and a serving version trained on exactly that batch."""
    snaps = tmp_path / "snapshots"
    nxt = write_ratings_snapshot(snaps, _ratings(range(5)))
    reg = Registry(tmp_path / "registry")
    serving = reg.register(
        _model(),
        metrics={"ndcg@10": SERVING_NDCG},
        snapshot=snapshot_provenance(snaps, snapshot_files(snaps)),
    )
    return {"snaps": snaps, "next": nxt, "reg": reg, "serving": serving.version}


def _config(world: dict[str, Any], **overrides: Any) -> RetrainConfig:
    return fast_retrain_config(world["snaps"], world["reg"], **overrides)


def _new_batch(world: dict[str, Any]) -> None:
    world["next"] = write_ratings_snapshot(
        world["snaps"], _ratings(range(5, 9)), first=world["next"]
    )


def _trainer(ndcg: float) -> Any:
    def train(config: RetrainConfig) -> Candidate:
        trained = TrainedModel("popularity", _model(), {"ndcg@10": ndcg}, {})
        return Candidate(trained, {"files": ["x.parquet"], "interactions": 3})

    return train


def _must_not_train(config: RetrainConfig) -> Candidate:
    raise AssertionError("the cycle should have stopped before training")


def test_no_new_batches_skips_without_training(world: dict[str, Any]) -> None:
    service = FakeService(world["serving"])
    result = run_cycle(_config(world), service, train=_must_not_train)
    assert result.outcome == "skipped"
    assert [s["step"] for s in result.steps] == ["checked_data"]
    assert result.steps[0]["new_batches"] == 0 and result.steps[0]["batches"] == 1
    assert service.switches == []


def test_worse_candidate_fails_the_gate_and_is_not_registered(world: dict[str, Any]) -> None:
    _new_batch(world)
    service = FakeService(world["serving"])
    result = run_cycle(_config(world), service, train=_trainer(SERVING_NDCG - 0.1))
    assert result.outcome == "gate_failed", result.reason
    assert "ndcg@10 0.2000 < serving 0.3000" in result.reason
    assert world["reg"].versions("popularity") == [world["serving"]]
    assert service.switches == []


def test_refused_version_is_logged_and_the_service_keeps_serving(world: dict[str, Any]) -> None:
    _new_batch(world)
    service = FakeService(world["serving"], refuse=True)
    result = run_cycle(_config(world), service, train=_trainer(SERVING_NDCG))
    assert result.outcome == "refused"
    assert "signature does not verify" in result.reason
    assert result.version is not None
    steps = [e["step"] for e in lifecycle.events(world["reg"], "popularity", result.version)]
    assert steps[-1] == "refused"
    assert service.slots["A"]["version"] == world["serving"]
    assert service.slots["canary"]["weight"] == 0.0


def test_canary_with_more_fallbacks_is_rolled_back(world: dict[str, Any]) -> None:
    _new_batch(world)
    service = FakeService(world["serving"], canary_fallback=0.5)
    result = run_cycle(_config(world), service, train=_trainer(SERVING_NDCG))
    assert result.outcome == "rolled_back"
    assert "canary fallback rate 0.500 > control 0.000" in result.reason
    assert service.slots["A"]["version"] == world["serving"], "the control never changed"
    assert service.slots["canary"]["weight"] == 0.0
    assert "production" not in world["reg"].aliases("popularity")


def test_canary_without_traffic_is_rolled_back(world: dict[str, Any]) -> None:
    _new_batch(world)
    service = FakeService(world["serving"])
    service.traffic = 0
    result = run_cycle(
        _config(world, canary_max_wait_s=0.05), service, train=_trainer(SERVING_NDCG)
    )
    assert result.outcome == "rolled_back"
    assert result.reason.startswith("not enough canary traffic to judge (0 of 20 requests")
    assert service.slots["canary"]["weight"] == 0.0


def test_healthy_candidate_is_promoted_and_its_log_keeps_each_steps_time(
    world: dict[str, Any],
) -> None:
    _new_batch(world)
    service = FakeService(world["serving"])
    result = run_cycle(_config(world, canary_weight=0.2), service, train=_trainer(SERVING_NDCG))
    assert result.outcome == "promoted", result.reason
    new = result.version
    assert new is not None and new != world["serving"]
    assert service.slots["A"]["version"] == new
    assert service.slots["canary"]["weight"] == 0.0
    assert world["reg"].aliases("popularity") == {"production": new}
    canary_started = next(s for s in result.steps if s["step"] == "canary_started")
    assert canary_started["weights"]["canary"] == pytest.approx(0.25)  # 0.2 of all traffic
    manifest = world["reg"].read_manifest("popularity", new)
    assert manifest["retrain"]["parent_version"] == world["serving"]
    logged = lifecycle.events(world["reg"], "popularity", new)
    assert [e["step"] for e in logged] == [
        "checked_data",
        "trained",
        "gate_passed",
        "registered",
        "canary_started",
        "promoted",
    ]
    # Steps from before the version existed are copied to its log with their original time.
    assert logged == result.steps


def test_missing_canary_slot_names_the_fix(world: dict[str, Any]) -> None:
    service = FakeService(world["serving"])
    del service.slots["canary"]
    with pytest.raises(MissingSlot) as err:
        run_cycle(_config(world), service, train=_must_not_train)
    message = str(err.value)
    assert "no canary variant 'canary' (it has: A)" in message
    assert "serve_config.yaml" in message and "\n" not in message


def test_a_different_model_in_the_control_slot_is_refused_before_training(
    world: dict[str, Any],
) -> None:
    _new_batch(world)
    service = FakeService(world["serving"])
    config = _config(world).model_copy(update={"model": ModelSpec(name="ease")})
    with pytest.raises(ModelMismatch) as err:
        run_cycle(config, service, train=_must_not_train)
    message = str(err.value)
    assert "model 'ease' is not what control variant 'A' serves ('popularity')" in message
    assert "set model.name to 'popularity'" in message and "\n" not in message


def test_gate_passes_within_tolerance_and_refuses_other_models(world: dict[str, Any]) -> None:
    manifest = world["reg"].read_manifest("popularity", world["serving"])
    serving = Serving([], {"model": "popularity", "version": world["serving"]}, manifest)
    config = _config(world, gate_tolerance=0.05)
    assert offline_gate(config, {"ndcg@10": SERVING_NDCG - 0.04}, serving).passed
    assert not offline_gate(config, {"ndcg@10": SERVING_NDCG - 0.06}, serving).passed
    other = config.model_copy(update={"model": ModelSpec(name="itemknn")})
    with pytest.raises(ModelMismatch):
        offline_gate(other, {"ndcg@10": 1.0}, serving)
