"""End to end without HTTP: simulated MovieLens users → line dialect → parse → snapshots →
online attribution → A/B report. Item-KNN (fitted on the train split) must beat popularity
with p < 0.05; an A/A run must not declare a winner."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pytest
from helpers import ListSink, write_lines_snapshot

from ray_app.experiments.report import ExperimentConfig, report_from_snapshots
from ray_app.models.base import Interactions
from ray_app.models.itemknn import ItemKNN, ItemKNNConfig
from ray_app.models.popularity import Popularity
from ray_app.serving.answer import Answer
from ray_app.simulation.run import RecommendFn, SimulationConfig, simulate
from ray_app.simulation.users import Population, UserBehaviourConfig, build_population

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def world(ml100k: Any) -> tuple[Population, dict[str, list[str]], dict[str, list[str]]]:
    population = build_population(ml100k.ratings, UserBehaviourConfig(), n_users=None)
    inter = Interactions.from_frame(population.train, weight_col=None)
    users = population.user_ids
    knn = ItemKNN(ItemKNNConfig(k=50)).fit(inter).recommend(users, k=10)
    pop = Popularity().fit(inter).recommend(users, k=10)
    return (
        population,
        dict(zip(knn.user_ids, knn.items, strict=True)),
        dict(zip(pop.user_ids, pop.items, strict=True)),
    )


def _sticky(a: dict[str, list[str]], b: dict[str, list[str]]) -> RecommendFn:
    """50/50 per-user assignment by a stable hash: A → ``a``'s lists, B → ``b``'s."""

    def recommend(user: str) -> Answer:
        if zlib.crc32(user.encode()) % 2 == 0:
            return Answer(items=a[user], variant="A", model="popularity", model_version="1")
        return Answer(items=b[user], variant="B", model="itemknn", model_version="1")

    return recommend


def _run(population: Population, recommend: RecommendFn, root: Path) -> None:
    cfg = SimulationConfig(n_users=None, steps_per_user=2, clock="virtual", interval_s=5.0)
    sink = ListSink()
    simulate(population, recommend, cfg, sink)
    # The ingest path proper: parse the produced lines and commit them as one snapshot batch.
    write_lines_snapshot(root, sink.lines)


def test_itemknn_beats_popularity(world: Any, tmp_path: Path) -> None:
    population, knn, pop = world
    _run(population, _sticky(pop, knn), tmp_path / "snap")
    cfg = ExperimentConfig(control="A", planned_requests_per_variant=500, window_s=3600)
    report = report_from_snapshots(tmp_path / "snap", tmp_path / "out", cfg)
    rates = {v["variant"]: v["rate"] for v in report["variants"]}
    assert rates["B"] > rates["A"]
    models = {v["variant"]: (v["models"], v["versions"]) for v in report["variants"]}
    assert models == {"A": (["popularity"], ["1"]), "B": (["itemknn"], ["1"])}
    (comp,) = report["comparisons"]
    assert comp["p_value"] < 0.05 and comp["planned_sample_reached"]
    assert report["srm"]["ok"]
    assert report["winner"] == "B"
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<svg" in page and "winner: B" in page


def test_aa_declares_no_winner(world: Any, tmp_path: Path) -> None:
    population, _, pop = world
    _run(population, _sticky(pop, pop), tmp_path / "snap")
    cfg = ExperimentConfig(control="A", planned_requests_per_variant=500, window_s=3600)
    report = report_from_snapshots(tmp_path / "snap", tmp_path / "out", cfg)
    assert report["winner"] is None
    assert report["decision"].startswith("no winner")
