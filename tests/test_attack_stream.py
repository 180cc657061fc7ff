"""Shilling cohorts sent like real users: the events they make, and a bandwagon attack that goes
through the real embedded broker and ingest and is screened out of the next trained version."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import ListSink, write_ratings_snapshot

from ray_app.broker.embedded import ensure_topics
from ray_app.broker.settings import KafkaSettings
from ray_app.evaluation.fairness import FairnessConfig
from ray_app.events.line_dialect import parse_line_batch
from ray_app.ingest.config import IngestConfig
from ray_app.ingest.run import run_ingest
from ray_app.registry.store import Registry
from ray_app.shilling.attacks import AttackConfig
from ray_app.shilling.detector import ShillingConfig
from ray_app.shilling.impact import lift_removed, target_impact
from ray_app.shilling.screen import read_screen_scores
from ray_app.simulation.attack_stream import AttackStreamConfig, inject_attack
from ray_app.simulation.run import KafkaSink
from ray_app.training.job import ModelSpec, TrainConfig, run_training

START = datetime(2026, 1, 1, tzinfo=UTC)


def _genuine(n_users: int = 40, n_items: int = 60) -> pd.DataFrame:
    rows = [
        (str(u), str(i), float(1 + (u * 7 + i) % 5), 0)
        for u in range(1, n_users + 1)
        for i in range(1, n_items + 1)
        if (u + i) % 3 == 0
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def test_a_cohort_becomes_watch_then_rate_lines_of_fresh_users() -> None:
    genuine = _genuine()
    sink = ListSink()
    cfg = AttackStreamConfig(
        attack=AttackConfig(kind="bandwagon", size=0.1, filler_size=0.1), start=START
    )
    done = inject_attack(genuine, ["5"], cfg, sink)
    assert sink.closed
    assert done.fake_users == ["41", "42", "43", "44"], "fresh ids above the genuine ones"
    parsed = parse_line_batch(
        [line.encode() for line in sink.lines],
        topic="movielog",
        partitions=0,
        offsets=list(range(len(sink.lines))),
    )
    assert parsed.dead.num_rows == 0
    good = parsed.good.to_pandas()
    assert done.events == len(good) == 2 * len(done.profiles)
    rates = good[good["kind"] == "rate"]
    assert sorted(zip(rates["user_id"], rates["movie_id"], rates["rating"], strict=True)) == sorted(
        zip(
            done.profiles["user_id"],
            done.profiles["item_id"],
            done.profiles["rating"].astype(float),
            strict=True,
        )
    )
    assert (rates.loc[rates["movie_id"] == "5", "rating"] == 5.0).all(), "the target pushed"
    watches = good[good["kind"] == "watch"].set_index(["user_id", "movie_id"])["ts"]
    rated_at = rates.set_index(["user_id", "movie_id"])["ts"]
    assert (watches.reindex(rated_at.index) < rated_at).all(), "each watch before its rating"


def test_an_unknown_target_is_refused_before_anything_is_sent() -> None:
    sink = ListSink()
    with pytest.raises(ValueError, match="no ratings"):
        inject_attack(_genuine(), ["9999"], AttackStreamConfig(), sink)
    assert sink.lines == []


def _train(snaps: Path, registry: Path, shilling: ShillingConfig) -> Any:
    return run_training(
        TrainConfig(
            snapshot_dir=str(snaps),
            registry=str(registry),
            models=[ModelSpec(name="ease", config={"l2": 250.0})],
            fairness=FairnessConfig(enabled=False),
            shilling=shilling,
        )
    )


@pytest.mark.integration
@pytest.mark.realdata
@pytest.mark.slow
def test_a_bandwagon_cohort_through_kafka_is_screened_out_of_training(
    broker: str, ray_session: None, ml100k: Any, tmp_path: Path
) -> None:
    """Genuine history is already in the snapshots; the attack arrives on the activity topic
    as watch and rate events, is ingested, and the next training run must catch it."""
    ratings = ml100k.ratings.assign(timestamp=1_700_000_000)
    counts = ratings["item_id"].value_counts()
    target = min(counts[(counts >= 5) & (counts <= 15)].index, key=int)  # a rule, not a pick
    clean_snaps, snaps = tmp_path / "clean", tmp_path / "snapshots"
    write_ratings_snapshot(clean_snaps, ratings, topic="history")
    write_ratings_snapshot(snaps, ratings, topic="history")

    topic = "attack-movielog"
    ensure_topics(broker, {topic: 1})
    cfg = AttackStreamConfig(attack=AttackConfig(kind="bandwagon", size=0.1), start=START)
    done = inject_attack(ratings, [target], cfg, KafkaSink(broker, topic))
    fakes = set(done.fake_users)
    stats = run_ingest(
        KafkaSettings(bootstrap_servers=broker),
        IngestConfig(
            topics=[topic], snapshot_dir=str(snaps), group_id="attack-ingest", until_idle_s=5.0
        ),
    )
    assert stats.records == done.events, "every attack event was ingested"

    clean = _train(clean_snaps, tmp_path / "reg-clean", ShillingConfig())
    screened = _train(snaps, tmp_path / "reg-screened", ShillingConfig())
    unscreened = _train(snaps, tmp_path / "reg-open", ShillingConfig(enabled=False))
    assert unscreened.users == screened.users == clean.users + len(fakes)

    reg = Registry(str(tmp_path / "reg-screened"))
    (mv,) = screened.versions
    scores = read_screen_scores(reg, mv.manifest["shilling"])
    flagged = set(scores.loc[scores["flagged"], "user_id"].astype(str))
    assert len(flagged & fakes) >= 0.95 * len(fakes), "attackers flagged"
    assert len(flagged - fakes) <= 0.015 * clean.users, "few genuine users flagged"
    model, _ = reg.load("ease", mv.version)
    assert not set(model.interactions.user_ids) & flagged, (
        "flagged users are not in the new version's training data"
    )
    assert mv.manifest["shilling"]["flagged"] == len(flagged) == screened.shilling["flagged"]

    def impact(root: Path, result: Any) -> dict[str, float]:
        m, _ = Registry(str(root)).load("ease", result.versions[0].version)
        users = sorted(ratings["user_id"].astype(str).unique())
        return target_impact(m, users, target, hit_k=50, exposure_k=50)

    before = impact(tmp_path / "reg-clean", clean)
    attacked = impact(tmp_path / "reg-open", unscreened)
    after = impact(tmp_path / "reg-screened", screened)
    print(pd.DataFrame({"clean": before, "attacked": attacked, "screened": after}))
    lifted = attacked["exposure@50"] - before["exposure@50"]
    assert lifted > 0.1 * before["exposure@50"] + 1e-4, ("the attack lifted the target", lifted)
    removed = lift_removed(before["exposure@50"], attacked["exposure@50"], after["exposure@50"])
    assert removed >= 0.8, (before, attacked, after)


@pytest.mark.realdata
def test_the_inject_command_writes_the_cohort_and_refuses_an_unknown_target(
    ml100k: Any, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from ray_app.cli import app

    out = tmp_path / "attack.log"
    args = ["shilling", "inject", "--target", "50", "--kind", "average", "--size", "0.01"]
    res = CliRunner().invoke(app, [*args, "--to-file", str(out)])
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    parsed = parse_line_batch(
        [x.encode() for x in lines], topic="movielog", partitions=0, offsets=list(range(len(lines)))
    )
    good = parsed.good.to_pandas()
    assert parsed.dead.num_rows == 0 and set(good["kind"]) == {"watch", "rate"}
    fakes = set(good["user_id"])
    assert len(fakes) == round(0.01 * ml100k.ratings["user_id"].nunique())
    assert not fakes & set(ml100k.ratings["user_id"].astype(str)), "fresh ids"
    assert (good.loc[good["movie_id"] == "50", "rating"].dropna() == 5.0).all()
    bad = CliRunner().invoke(app, [*args, "--target", "nope", "--to-file", str(tmp_path / "x")])
    assert bad.exit_code == 2, "a user error: one line, no traceback"
    assert "error: target items ['nope'] have no ratings" in bad.output
