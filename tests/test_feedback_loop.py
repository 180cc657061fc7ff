"""Feedback loops: slopes with intervals, list overlap, the user-choice models, and a small
closed loop on synthetic data whose exposure concentrates until the echo-chamber flag rises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ray_app.data.synth import generate
from ray_app.experiments.feedback_loop import FeedbackLoopConfig, run_arm
from ray_app.experiments.feedback_loop_metrics import (
    cycle_metrics,
    echo_chamber,
    fit_trend,
    list_overlap,
)
from ray_app.experiments.feedback_loop_report import compare, run_experiment
from ray_app.registry.store import Registry
from ray_app.simulation.choice import ChoiceConfig, Preferences, choose, watch_probability


def test_the_slope_interval_covers_the_true_slope_and_shrinks_with_noise() -> None:
    rng = np.random.default_rng(0)
    y = 0.3 + 0.02 * np.arange(8) + rng.normal(0, 0.005, 8)
    t = fit_trend(y)
    assert t.low < 0.02 < t.high and t.low > 0
    assert t.cycles == 8 and t.p_value < 0.001
    assert echo_chamber(t)
    noisy = fit_trend(0.3 + 0.02 * np.arange(8) + rng.normal(0, 0.05, 8))
    assert noisy.high - noisy.low > t.high - t.low


def test_no_flag_for_a_flat_falling_or_too_short_series() -> None:
    assert not echo_chamber(fit_trend([0.5, 0.5, 0.5, 0.5]))
    assert not echo_chamber(fit_trend([0.9, 0.8, 0.7, 0.6]))
    short = fit_trend([0.1, 0.5])
    assert short.slope == pytest.approx(0.4) and np.isnan(short.low)
    assert not echo_chamber(short)
    # A rise inside the noise: the interval straddles zero.
    assert not echo_chamber(fit_trend([0.50, 0.60, 0.45, 0.62, 0.48]))


def test_the_interval_is_the_t_interval_of_linregress() -> None:
    from scipy import stats

    y = np.array([0.1, 0.14, 0.17, 0.25, 0.26])
    fit = stats.linregress(np.arange(5), y)
    half = stats.t.ppf(0.975, 3) * fit.stderr
    t = fit_trend(y)
    assert (t.low, t.high) == pytest.approx((fit.slope - half, fit.slope + half))


def test_list_overlap_is_the_mean_pairwise_jaccard() -> None:
    assert list_overlap(np.array([[0, 1], [0, 1], [0, 1]]), 4) == 1.0
    assert list_overlap(np.array([[0, 1], [2, 3]]), 4) == 0.0
    # pairs: {0,1}-{1,2}: 1/3; {0,1}-{2,3}: 0; {1,2}-{2,3}: 1/3
    assert list_overlap(np.array([[0, 1], [1, 2], [2, 3]]), 4) == pytest.approx(2 / 9)


def test_cycle_metrics_on_a_known_round() -> None:
    lists = np.array([[0, 1], [0, 2]])
    hidden = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 0]]))
    got = cycle_metrics(
        lists, 4, np.array([0.5, 0.1, 0.2, 0.0]), hidden, np.array([True, False]), k=2
    )
    assert got["coverage"] == 0.75
    assert got["mean_popularity"] == pytest.approx((0.5 + 0.1 + 0.5 + 0.2) / 4)
    assert got["overlap"] == pytest.approx(1 / 3)
    assert got["ndcg"] == pytest.approx((1 / np.log2(3)) / 1.0), "only user 0 has truth"
    assert got["conversion"] == 0.5
    assert 0 < got["gini"] < 1


def test_popularity_choice_adds_a_pull_towards_popular_items() -> None:
    held = np.array([[5.0, 0.0, 3.0]])
    pop = np.array([[0.0, 1.0, 0.5]])
    pref = watch_probability(ChoiceConfig(kind="preference"), held, pop)
    herd = watch_probability(ChoiceConfig(kind="popularity", popularity_bias=0.2), held, pop)
    assert pref == pytest.approx(np.array([[0.51, 0.01, 0.01]]))
    assert herd == pytest.approx(np.array([[0.51, 0.21, 0.11]]))
    with pytest.raises(ValueError, match="exceeds 1"):
        ChoiceConfig(kind="popularity", base_prob=0.5, lift=0.4, popularity_bias=0.2)


def test_choose_never_picks_padding_an_already_watched_item_or_past_examine_top() -> None:
    cfg = ChoiceConfig(kind="popularity", base_prob=0.5, lift=0.0, popularity_bias=0.5)
    lists = np.array([[0, 1, 2, -1], [3, 0, 1, 2]])
    watched = sp.csr_matrix(([1.0], ([0], [1])), shape=(2, 4))
    picked = choose(
        cfg.model_copy(update={"examine_top": 3}),
        lists,
        np.zeros(lists.shape),
        np.ones(4),
        watched,
        np.random.default_rng(0),
    )
    assert picked[0].tolist() == [True, False, True, False], "p = 1 except watched/padding"
    assert picked[1].tolist() == [True, True, True, False], "the fourth slot is not examined"


def test_the_herd_watches_popular_items_more_often() -> None:
    n = 4000
    lists = np.tile(np.array([[0, 1]]), (n, 1))
    pop = np.array([1.0, 0.0])
    none = sp.csr_matrix((n, 2))
    picks = {
        kind: choose(
            ChoiceConfig(kind=kind),
            lists,
            np.zeros(lists.shape),
            pop,
            none,
            np.random.default_rng(1),
        ).mean(axis=0)
        for kind in ("preference", "popularity")
    }
    assert picks["preference"] == pytest.approx([0.01, 0.01], abs=0.01)
    assert picks["popularity"][0] == pytest.approx(0.16, abs=0.02)
    assert picks["popularity"][1] == pytest.approx(0.01, abs=0.01)


def test_preferences_look_up_held_out_ratings_per_slot() -> None:
    held = pd.DataFrame(
        {"user_id": ["u1", "u2", "zz"], "item_id": ["b", "a", "a"], "rating": [4.0, 2.0, 5.0]}
    )
    prefs = Preferences.from_frame(held, ["u1", "u2"], ["a", "b"])
    assert prefs.lookup(np.array([[0, 1], [0, -1]])).tolist() == [[0.0, 4.0], [2.0, 0.0]]


@pytest.fixture(scope="module")
def synthetic() -> tuple[pd.DataFrame, dict[str, list[str]]]:
    data = generate(20_000, 300, 400, seed=0, top_item_users=0.9)
    assert data.ratings is not None
    genres = dict(
        zip(data.movies["item_id"].astype(str), data.movies["genres"].map(list), strict=True)
    )
    return data.ratings, genres


# A young service: most of each user's taste is still hidden, so what they watch from the lists
# is what the next model learns from.
LOOP = FeedbackLoopConfig(cycles=5, model="itemknn", test_fraction=0.8)


def test_a_closed_loop_without_mitigation_raises_the_echo_chamber_flag(
    synthetic: tuple[pd.DataFrame, dict[str, list[str]]], tmp_path: Path
) -> None:
    ratings, genres = synthetic
    cfg = LOOP.model_copy(update={"choice": ChoiceConfig(kind="popularity")})
    arm = run_arm(ratings, genres, cfg, tmp_path)
    gini = [c["gini"] for c in arm.cycles]
    assert arm.echo_chamber, gini
    assert arm.trends["gini"].low > 0
    assert gini[-1] > gini[0] + 0.1, "exposure concentrated"
    assert arm.cycles[-1]["coverage"] < arm.cycles[0]["coverage"]
    assert all(c["watches"] > 0 for c in arm.cycles), "users chose from what was served"
    reg = Registry(str(tmp_path / "registry"))
    assert reg.resolve("itemknn", "production") == arm.versions[-1], "each cycle promoted"
    assert len(reg.versions("itemknn")) == cfg.cycles
    # Cycle c trained on the history plus every earlier cycle's watches.
    manifests = [reg.read_manifest("itemknn", v) for v in arm.versions]
    sizes = [m["snapshot"]["interactions"] for m in manifests]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]


def test_the_report_puts_the_arms_side_by_side(
    synthetic: tuple[pd.DataFrame, dict[str, list[str]]], tmp_path: Path
) -> None:
    ratings, genres = synthetic
    cfg = LOOP.model_copy(update={"cycles": 3, "novelty_weight": 0.5})
    report = run_experiment(
        ratings, genres, cfg, ["preference"], "novelty", tmp_path, dataset="synth"
    )
    arms = {(a["choice"], a["mitigation"]) for a in report["arms"]}
    assert arms == {("preference", "none"), ("preference", "novelty")}
    (cmp,) = report["comparisons"]
    assert cmp["coverage_ratio"] > 1.0, "the long-tail term shows more of the catalogue"
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["comparisons"][0]["coverage_ratio"] == pytest.approx(cmp["coverage_ratio"])
    md = (tmp_path / "report.md").read_text()
    assert "| preference | novelty |" in md and "coverage ratio" in md


def test_compare_judges_each_goal() -> None:
    from ray_app.experiments.feedback_loop import ArmResult

    def arm(gini: list[float], cov: float, conv: float, ndcg: float) -> ArmResult:
        a = ArmResult(LOOP)
        a.cycles = [{"gini": g, "coverage": cov, "conversion": conv, "ndcg": ndcg} for g in gini]
        a.trends = {"gini": fit_trend(gini)}
        return a

    got = compare(arm([0.1, 0.2, 0.3], 0.2, 0.5, 0.2), arm([0.1, 0.14, 0.18], 0.4, 0.49, 0.19))
    assert got["gini_slope_ratio"] == pytest.approx(0.4)
    assert got["goals"] == {
        "gini_slope_halved": True,
        "coverage_1_5x": True,
        "conversion_within_3pct": True,
        "ndcg_within_3pct": False,
    }


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--choice", "herd", "--choice 'herd' is unknown"), ("--mitigation", "magic", "mitigation")],
)
def test_the_command_refuses_an_unknown_choice_or_mitigation(
    tmp_path: Path, flag: str, value: str, message: str
) -> None:
    from typer.testing import CliRunner

    from ray_app.cli import app

    res = CliRunner().invoke(
        app, ["experiment", "feedback-loop", "--out", str(tmp_path), flag, value]
    )
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "report.json").exists()
