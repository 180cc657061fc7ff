"""The shilling screen and the fairness block in the real training step (Ray, MovieLens):
a bandwagon attack in the snapshots is flagged, left out of the new version's training data,
listed in its signed manifest, and the lift it gave its target is gone; train and retrain both
register versions with a fairness block."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from helpers import FakeService, write_ratings_snapshot

from ray_app.evaluation.fairness import FairnessConfig
from ray_app.registry.store import Registry
from ray_app.retraining.config import RetrainConfig
from ray_app.retraining.cycle import run_cycle, train_candidate
from ray_app.shilling.attacks import AttackConfig, generate_attack
from ray_app.shilling.detector import ShillingConfig
from ray_app.shilling.impact import target_impact
from ray_app.shilling.screen import read_screen_scores
from ray_app.training.job import ModelSpec, TrainConfig, run_training

pytestmark = [pytest.mark.integration, pytest.mark.realdata]
FAIRNESS = FairnessConfig(bootstrap_samples=200)


@pytest.fixture(scope="module")
def world(ml100k: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """MovieLens-100K, a target chosen by rule (the lowest item id among those with 5 to 15
    ratings), and a 10% bandwagon attack pushing it. The whole data set, because the detector
    judges users against the crowd: with a few hundred users it misses more of the fakes."""
    ratings = ml100k.ratings.assign(timestamp=1_700_000_000)  # one date: one file per batch
    counts = ratings["item_id"].value_counts()
    target = min(counts[(counts >= 5) & (counts <= 15)].index, key=int)
    attack = generate_attack(
        ratings, [target], AttackConfig(kind="bandwagon", size=0.1), seed=0, timestamp=1_700_000_000
    )
    return {
        "ratings": ratings,
        "attack": attack,
        "fakes": set(attack["user_id"]),
        "target": target,
        "genuine": sorted(ratings["user_id"].unique()),
        "root": tmp_path_factory.mktemp("shilling"),
    }


def test_the_train_job_leaves_flagged_users_out_and_lists_them(
    ray_session: None, world: dict[str, Any]
) -> None:
    snaps = world["root"] / "train-snapshots"
    nxt = write_ratings_snapshot(snaps, world["ratings"])
    write_ratings_snapshot(snaps, world["attack"], first=nxt)
    registry = str(world["root"] / "train-registry")
    config = TrainConfig(
        snapshot_dir=snaps,
        registry=registry,
        models=[ModelSpec(name="itemknn")],
        fairness=FAIRNESS,
        shilling=ShillingConfig(metrics_file=world["root"] / "shilling.prom"),
    )
    result = run_training(config)
    (mv,) = result.versions
    screen = mv.manifest["shilling"]
    assert screen == result.shilling
    scores = read_screen_scores(Registry(registry), screen)
    flagged = set(scores.loc[scores["flagged"], "user_id"])
    assert len(flagged & world["fakes"]) >= 0.95 * len(world["fakes"])
    assert len(flagged - world["fakes"]) <= 0.015 * len(world["genuine"])
    assert screen["flagged"] == len(flagged)
    assert screen["interactions_removed"] >= len(world["attack"])
    model, _ = Registry(registry).load("itemknn", mv.version)
    assert not set(model.interactions.user_ids) & flagged, (
        "flagged users are not in the training data"
    )
    assert f"ray_app_shilling_flagged_users {float(len(flagged))}" in (
        (world["root"] / "shilling.prom").read_text()
    )
    fairness = mv.manifest["fairness"]
    assert {"gender", "age_band", "occupation", "activity"} <= set(fairness["parity"])
    assert fairness["groups"]["gender"]["F"]["ndcg@10"]["ci"][0] is not None
    assert set(fairness["exposure"]["buckets"]) == {"head", "mid", "tail"}


def test_retrain_screens_the_attack_away_and_keeps_the_fairness_block(
    ray_session: None, world: dict[str, Any]
) -> None:
    snaps = world["root"] / "retrain-snapshots"
    registry = str(world["root"] / "retrain-registry")
    nxt = write_ratings_snapshot(snaps, world["ratings"])
    spec = ModelSpec(name="ease", config={"l2": 250.0})
    clean = run_training(
        TrainConfig(snapshot_dir=snaps, registry=registry, models=[spec], fairness=FAIRNESS)
    ).versions[0]
    assert clean.manifest["fairness"]["k"] == 10, "the train job's version has the block"
    write_ratings_snapshot(snaps, world["attack"], first=nxt)  # the attack arrives
    config = RetrainConfig(
        snapshot_dir=snaps,
        registry=registry,
        model=spec,
        fairness=FAIRNESS,
        gate_tolerance=0.05,
        parity_gap_tolerance=0.2,
        canary_min_requests=20,
        canary_poll_s=0.01,
    )
    result = run_cycle(config, FakeService(clean.version, model="ease"))
    assert result.outcome == "promoted", result.reason
    reg = Registry(registry)
    new, mv = reg.load("ease", result.version)
    assert mv.manifest["fairness"]["k"] == 10, "the retrained version has the block"
    flagged = set(read_screen_scores(reg, mv.manifest["shilling"]).query("flagged")["user_id"])
    assert len(flagged & world["fakes"]) >= 0.95 * len(world["fakes"])
    assert not set(new.interactions.user_ids) & flagged
    trained_step = next(s for s in result.steps if s["step"] == "trained")
    assert trained_step["shilling_flagged"] == len(flagged)

    # The same cycle's training step without the screen: what the attack would have done.
    unscreened = train_candidate(
        config.model_copy(update={"shilling": ShillingConfig(enabled=False)})
    ).trained.model
    old, _ = reg.load("ease", clean.version)
    users, target = world["genuine"], world["target"]
    before = target_impact(old, users, target)["hr@50"]
    attacked = target_impact(unscreened, users, target)["hr@50"]
    after = target_impact(new, users, target)["hr@50"]
    assert attacked > before + 0.02, (before, attacked)
    assert after - before <= 0.2 * (attacked - before), (before, attacked, after)
    frame = pd.DataFrame({"before": [before], "attacked": [attacked], "after": [after]})
    print(frame.to_string(index=False))
