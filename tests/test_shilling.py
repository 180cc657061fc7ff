"""Shilling: the standard attack profiles, the detector's features (known answers) and flags,
the pre-training screen's stored list and metric, and ``ray-app shilling detect``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from ray_app.cli import app
from ray_app.registry.signing import SignatureError
from ray_app.registry.store import Registry
from ray_app.shilling.attacks import ATTACK_KINDS, AttackConfig, generate_attack
from ray_app.shilling.detector import ShillingConfig, score_users, user_features
from ray_app.shilling.screen import (
    read_screen_scores,
    screen_frame,
    store_screen,
    write_screen_metrics,
)


def genuine(n_users: int = 300, n_items: int = 400, seed: int = 0) -> pd.DataFrame:
    """Users who pick items by (Zipf) popularity and rate them near the item's quality."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.9
    quality = rng.uniform(2.0, 4.5, n_items)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, int(rng.integers(20, 80)), replace=False, p=pop / pop.sum())
        ratings = np.clip(np.rint(quality[items] + rng.normal(0, 0.7, len(items))), 1, 5)
        rows += [
            (str(u + 1), f"i{i}", float(r), 1_700_000_000 + u)
            for i, r in zip(items, ratings, strict=True)
        ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return genuine()


def _one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and "Traceback" not in output
    return lines[0]


# ---- attack profiles ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ATTACK_KINDS)
def test_every_profile_pushes_the_targets_with_fresh_numeric_users(
    ratings: pd.DataFrame, kind: str
) -> None:
    cfg = AttackConfig(kind=kind, size=0.05, filler_size=0.05)
    attack = generate_attack(ratings, ["i300", "i301"], cfg, seed=1)
    users = attack["user_id"].unique()
    assert len(users) == round(0.05 * 300)
    assert min(int(u) for u in users) == 301, "ids continue after the genuine ones"
    per_user = attack.groupby("user_id")
    n_items = ratings["item_id"].nunique()
    extra = 3 if kind == "bandwagon" else 0
    assert (per_user.size() == round(0.05 * n_items) + 2 + extra).all()
    pushed = attack[attack["item_id"].isin(["i300", "i301"])]
    assert len(pushed) == 2 * len(users) and (pushed["rating"] == 5.0).all()
    assert attack["rating"].between(1, 5).all()
    lo, hi = ratings["timestamp"].min(), ratings["timestamp"].max()
    assert attack["timestamp"].between(lo, hi).all()


def test_bandwagon_rates_the_most_rated_items_the_maximum(ratings: pd.DataFrame) -> None:
    attack = generate_attack(ratings, ["i300"], AttackConfig(kind="bandwagon"), seed=2)
    top3 = ratings["item_id"].value_counts().index[:3]
    for item in top3:
        rows = attack[attack["item_id"] == item]
        assert rows["user_id"].nunique() == attack["user_id"].nunique()
        assert (rows["rating"] == 5.0).all()


def test_average_over_popular_fills_only_from_the_popular_items(ratings: pd.DataFrame) -> None:
    cfg = AttackConfig(kind="average_over_popular", popular_share=0.1)
    attack = generate_attack(ratings, ["i300"], cfg, seed=3)
    counts = ratings["item_id"].value_counts(sort=True)
    popular = set(counts.index[: round(0.1 * len(counts))])
    filler = attack[attack["item_id"] != "i300"]["item_id"]
    assert set(filler) <= popular


def test_average_filler_follows_item_means_and_random_filler_does_not(
    ratings: pd.DataFrame,
) -> None:
    means = ratings.groupby("item_id")["rating"].mean()

    def distance(kind: str) -> float:
        attack = generate_attack(
            ratings, ["i300"], AttackConfig(kind=kind, size=0.2, filler_size=0.1), seed=4
        )
        filler = attack[attack["item_id"] != "i300"]
        return float((filler["rating"] - means.reindex(filler["item_id"]).to_numpy()).abs().mean())

    assert distance("average") < 0.8 * distance("random")


def test_an_unknown_target_or_scale_is_refused(ratings: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="have no ratings"):
        generate_attack(ratings, ["nope"], AttackConfig())
    with pytest.raises(ValueError, match="at least one target"):
        generate_attack(ratings, [], AttackConfig())
    with pytest.raises(ValueError, match="must exceed min_rating"):
        AttackConfig(min_rating=5, max_rating=1)


# ---- detector -------------------------------------------------------------------------------


def test_features_known_answer() -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u3", "u3"],
            "item_id": ["i1", "i2", "i1", "i1", "i3"],
            "rating": [5.0, 3.0, 3.0, 4.0, None],  # u3 watched i3 without rating it
        }
    )
    f = user_features(frame)
    # Items: i1 by 3 users (ratings 5, 3, 4: mean 4), i2 and i3 by one each.
    assert f.loc["u1", "popularity"] == pytest.approx(math.log(3) / 2)
    assert f.loc["u2", "popularity"] == pytest.approx(math.log(3))
    assert f.loc["u1", "deviation"] == pytest.approx((1 / 3 + 0 / 1) / 2)
    assert f.loc["u2", "deviation"] == pytest.approx(1 / 3)
    assert f.loc["u3", "deviation"] == 0.0 and f.loc["u3", "rated"] == 1
    assert f.loc["u3", "interactions"] == 2


@pytest.mark.parametrize("kind", ["random", "average", "bandwagon"])
def test_planted_profiles_are_flagged_and_few_genuine_users_are(
    ratings: pd.DataFrame, kind: str
) -> None:
    # 32 filler items (8% of this small catalogue), about what 3% is on MovieLens-100K: far
    # shorter profiles are harder, a bandwagon's popular items then dominate them.
    cfg = AttackConfig(kind=kind, size=0.05, filler_size=0.08)
    attack = generate_attack(ratings, ["i350"], cfg, seed=5)
    scores = score_users(pd.concat([ratings, attack]), ShillingConfig())
    fake = scores["user_id"].isin(set(attack["user_id"]))
    assert scores.loc[fake, "flagged"].mean() >= 0.9
    assert scores.loc[~fake, "flagged"].mean() <= 0.02
    assert scores.loc[fake, "score"].min() > scores.loc[~fake, "score"].median()


def test_the_budget_caps_the_flags_highest_scores_first(ratings: pd.DataFrame) -> None:
    attack = generate_attack(ratings, ["i350"], AttackConfig(size=0.1), seed=6)
    both = pd.concat([ratings, attack])
    capped = score_users(both, ShillingConfig(flag_budget=0.02))
    assert capped["flagged"].sum() == math.floor(0.02 * len(capped))
    threshold = capped.loc[capped["flagged"], "score"].min()
    assert (capped.loc[~capped["flagged"], "score"] <= threshold).all()


def test_short_profiles_and_small_crowds_are_never_flagged(ratings: pd.DataFrame) -> None:
    attack = generate_attack(ratings, ["i350"], AttackConfig(size=0.05), seed=7)
    both = pd.concat([ratings, attack])
    long_only = score_users(both, ShillingConfig(min_profile=1000))
    assert long_only["score"].isna().all() and not long_only["flagged"].any()
    few = both[both["user_id"].astype(int) <= 40]
    assert not score_users(few, ShillingConfig(min_users=50))["flagged"].any()


# ---- the pre-training screen ----------------------------------------------------------------


def test_screen_drops_the_flagged_rows_and_stores_a_verified_list(
    ratings: pd.DataFrame, tmp_path: Path
) -> None:
    cfg = AttackConfig(kind="bandwagon", filler_size=0.08)
    attack = generate_attack(ratings, ["i350"], cfg, seed=8)
    frame = pd.concat([ratings, attack], ignore_index=True)
    kept, screen = screen_frame(frame, ShillingConfig())
    assert set(screen.flagged) >= set(attack["user_id"])
    assert not kept["user_id"].isin(screen.flagged).any()
    assert len(kept) + screen.interactions_removed == len(frame)

    reg = Registry(tmp_path / "registry")
    entry = store_screen(reg, screen)
    assert entry["flagged"] == len(screen.flagged) and entry["users"] == frame["user_id"].nunique()
    assert entry["list"]["path"] == f"_shilling/{entry['list']['sha256']}.parquet"
    stored = read_screen_scores(reg, entry)
    assert sorted(stored.loc[stored["flagged"], "user_id"]) == screen.flagged
    assert reg.models() == [], "the list is not mistaken for a model"

    path = Path(reg.path(entry["list"]["path"]))
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(SignatureError, match="tampered"):
        read_screen_scores(reg, entry)


def test_screen_metrics_textfile(ratings: pd.DataFrame, tmp_path: Path) -> None:
    cfg = ShillingConfig(metrics_file=tmp_path / "metrics" / "shilling.prom")
    _, screen = screen_frame(ratings, cfg)
    path = write_screen_metrics(screen.summary(), cfg)
    assert path == str(tmp_path / "metrics" / "shilling.prom")
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(Path(path).read_text())
        for s in family.samples
    }
    assert values["ray_app_shilling_flagged_users"] == len(screen.flagged)
    assert values["ray_app_shilling_scored_users"] == 300
    assert values["ray_app_shilling_flag_budget"] == 0.1
    assert write_screen_metrics(screen.summary(), ShillingConfig()) is None


# ---- ray-app shilling detect ----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_detect_writes_one_row_per_user(ratings: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    attack = generate_attack(ratings, ["i350"], AttackConfig(size=0.05, filler_size=0.08), seed=9)
    frame = pd.concat([ratings, attack]).rename(columns={"timestamp": "ts"})
    src, out = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    if suffix == ".csv":
        frame.to_csv(src, index=False)
    else:
        frame.to_parquet(src, index=False)
    result = CliRunner().invoke(
        app, ["shilling", "detect", "--ratings", str(src), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    got = pd.read_csv(out, dtype={"user_id": str}) if suffix == ".csv" else pd.read_parquet(out)
    assert list(got.columns) == ["user_id", "score", "flagged"]
    assert len(got) == frame["user_id"].nunique()
    assert set(got.loc[got["flagged"], "user_id"]) >= set(attack["user_id"])
    assert f"{got['flagged'].sum()} flagged" in result.output


@pytest.mark.parametrize(
    ("content", "name", "out", "expected"),
    [
        ("user_id,item_id\n1,2\n", "r.csv", "o.csv", "has no column(s) rating"),
        ("user_id,item_id,rating\n1,2,good\n", "r.csv", "o.csv", "rating 'good' is not a number"),
        ("user_id,item_id,rating\n1,2,3\n", "r.json", "o.csv", "use a .parquet or .csv file"),
        ("user_id,item_id,rating\n1,2,3\n", "r.csv", "o.txt", "--out"),
    ],
)
def test_detect_bad_input_is_one_line(
    tmp_path: Path, content: str, name: str, out: str, expected: str
) -> None:
    (tmp_path / name).write_text(content)
    result = CliRunner().invoke(
        app,
        ["shilling", "detect", "--ratings", str(tmp_path / name), "--out", str(tmp_path / out)],
    )
    assert result.exit_code == 2
    assert expected in _one_error_line(result.output)


def test_detect_missing_file_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["shilling", "detect", "--ratings", str(tmp_path / "x.csv"), "--out", "o.csv"]
    )
    assert result.exit_code == 2
    assert "does not exist" in _one_error_line(result.output)
