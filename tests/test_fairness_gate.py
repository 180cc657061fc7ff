"""The retraining gate's parity check: a candidate whose parity gap of the gate metric grows by
more than the tolerance is refused, and the cycle says why (fake service, fake training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import FakeService, fast_retrain_config, interactions, write_ratings_snapshot

from ray_app.config import ConfigError
from ray_app.models.popularity import Popularity
from ray_app.registry.store import Registry
from ray_app.retraining.config import RetrainConfig
from ray_app.retraining.cycle import Candidate, Serving, offline_gate, run_cycle
from ray_app.snapshots.read import snapshot_files, snapshot_provenance
from ray_app.training.job import TrainedModel

NDCG = 0.30


def _fairness(gender: float, occupation: float = 0.1) -> dict[str, Any]:
    parity = {
        "gender": {"ndcg@10": {"gap": gender}},
        "occupation": {"ndcg@10": {"gap": occupation}},
    }
    top = max(gender, occupation)
    return {"parity": parity, "parity_gap": {"ndcg@10": {"gap": top}}}


@pytest.fixture()
def world(tmp_path: Path) -> dict[str, Any]:
    """A serving version with gender gap 0.05, and a new snapshot batch since it."""
    snaps = tmp_path / "snapshots"
    ratings = pd.DataFrame(
        {"user_id": ["1", "2"], "item_id": ["m1", "m1"], "rating": [4.0, 5.0], "timestamp": 0}
    )
    nxt = write_ratings_snapshot(snaps, ratings)
    reg = Registry(tmp_path / "registry")
    model = Popularity().fit(interactions([("u1", "m1"), ("u2", "m2")]))
    serving = reg.register(
        model,
        metrics={"ndcg@10": NDCG},
        snapshot=snapshot_provenance(snaps, snapshot_files(snaps)),
        extra={"fairness": _fairness(0.05)},
    )
    write_ratings_snapshot(snaps, ratings, first=nxt)
    return {"snaps": snaps, "reg": reg, "serving": serving, "model": model}


def _config(world: dict[str, Any], **overrides: Any) -> RetrainConfig:
    return fast_retrain_config(world["snaps"], world["reg"], **overrides)


def _serving(world: dict[str, Any], manifest: dict[str, Any] | None = None) -> Serving:
    mv = world["serving"]
    return Serving([], {"model": "popularity", "version": mv.version}, manifest or mv.manifest)


def _trainer(world: dict[str, Any], fairness: dict[str, Any]) -> Any:
    def train(config: RetrainConfig) -> Candidate:
        trained = TrainedModel("popularity", world["model"], {"ndcg@10": NDCG}, {}, None, fairness)
        screen = {"flagged": 2, "users": 40, "list": {"path": "_shilling/x.parquet"}}
        return Candidate(trained, {"files": [], "interactions": 2}, screen)

    return train


def test_a_wider_gap_than_the_tolerance_allows_is_refused(world: dict[str, Any]) -> None:
    gate = offline_gate(_config(world), {"ndcg@10": NDCG}, _serving(world), _fairness(0.11))
    assert not gate.passed
    assert gate.reason == "parity gap of ndcg@10 across gender 0.1100 > serving 0.0500 + 0.05"
    assert gate.details["parity"]["groups"]["gender"] == {
        "candidate": 0.11,
        "candidate_lower": None,
        "serving": 0.05,
    }


def _with_intervals(gap: float, half_width: float) -> dict[str, Any]:
    """A fairness block whose gender groups F and M are ``gap`` apart, each with an interval
    of ``half_width`` either side of its mean."""
    block = _fairness(gap)
    block["parity"]["gender"]["ndcg@10"].update(best="M", worst="F")
    means = {"M": 0.3 + gap, "F": 0.3}
    block["groups"] = {
        "gender": {
            g: {"ndcg@10": {"mean": m, "ci": [m - half_width, m + half_width]}}
            for g, m in means.items()
        }
    }
    return block


def test_a_wider_gap_that_noise_explains_passes(world: dict[str, Any]) -> None:
    # point gap 0.15 > 0.05 + 0.05, but the intervals overlap: another holdout could close it
    gate = offline_gate(
        _config(world), {"ndcg@10": NDCG}, _serving(world), _with_intervals(0.15, 0.06)
    )
    assert gate.passed, gate.reason
    assert gate.details["parity"]["groups"]["gender"]["candidate_lower"] == pytest.approx(0.03)


def test_a_wider_gap_beyond_the_intervals_is_refused(world: dict[str, Any]) -> None:
    gate = offline_gate(
        _config(world), {"ndcg@10": NDCG}, _serving(world), _with_intervals(0.3, 0.05)
    )
    assert not gate.passed
    assert gate.reason == (
        "parity gap of ndcg@10 across gender 0.2000 > serving 0.0500 + 0.05 "
        "(gap 0.3000, beyond its 95% intervals)"
    )


def test_a_gap_within_tolerance_passes_and_unlisted_groupings_do_not_count(
    world: dict[str, Any],
) -> None:
    # occupation is not in the default parity_groups: its wider gap does not refuse.
    fairness = _fairness(0.09, occupation=0.5)
    gate = offline_gate(_config(world), {"ndcg@10": NDCG}, _serving(world), fairness)
    assert gate.passed, gate.reason
    assert "occupation" not in gate.details["parity"]["groups"]
    strict = _config(world, parity_groups=["gender", "occupation"])
    assert not offline_gate(strict, {"ndcg@10": NDCG}, _serving(world), fairness).passed


def test_no_check_without_a_tolerance_or_a_serving_block(world: dict[str, Any]) -> None:
    off = _config(world, parity_gap_tolerance=None)
    gate = offline_gate(off, {"ndcg@10": NDCG}, _serving(world), _fairness(0.9))
    assert gate.passed and gate.details["parity"]["checked"] is False
    old = {k: v for k, v in world["serving"].manifest.items() if k != "fairness"}
    gate = offline_gate(_config(world), {"ndcg@10": NDCG}, _serving(world, old), _fairness(0.9))
    assert gate.passed
    assert gate.details["parity"]["groups"]["gender"] == {
        "candidate": 0.9,
        "candidate_lower": None,
        "serving": None,
    }


def test_a_gate_metric_without_a_parity_gap_names_the_fix(world: dict[str, Any]) -> None:
    config = _config(world, gate_metric="coverage")
    with pytest.raises(ConfigError) as err:
        offline_gate(config, {"coverage": 0.5}, _serving(world), _fairness(0.05))
    assert "gate_metric 'coverage' has no parity gap" in str(err.value)
    assert "parity_gap_tolerance to null" in str(err.value)


def test_the_cycle_logs_the_refusal_and_registers_nothing(world: dict[str, Any]) -> None:
    service = FakeService(world["serving"].version)
    result = run_cycle(_config(world), service, train=_trainer(world, _fairness(0.2)))
    assert result.outcome == "gate_failed"
    assert result.reason.startswith("parity gap of ndcg@10 across gender 0.2000")
    failed = result.steps[-1]
    assert failed["step"] == "gate_failed" and failed["reason"] == result.reason
    assert result.steps[-2]["shilling_flagged"] == 2
    assert world["reg"].versions("popularity") == [world["serving"].version]


def test_a_passing_candidate_carries_its_fairness_and_screen_into_the_manifest(
    world: dict[str, Any],
) -> None:
    service = FakeService(world["serving"].version)
    fairness = _fairness(0.06)
    result = run_cycle(_config(world), service, train=_trainer(world, fairness))
    assert result.outcome == "promoted", result.reason
    assert result.version is not None
    manifest = world["reg"].read_manifest("popularity", result.version)
    assert manifest["fairness"] == fairness
    assert manifest["shilling"]["flagged"] == 2
    assert manifest["retrain"]["gate"]["parity"]["groups"]["gender"]["candidate"] == 0.06
