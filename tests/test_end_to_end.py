"""The whole loop on real parts: embedded broker → ingest → Ray train → Ray Serve → HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from ray_app.broker.embedded import free_port
from ray_app.broker.settings import KafkaSettings
from ray_app.ingest.config import IngestConfig
from ray_app.ingest.run import run_ingest
from ray_app.replay.events import ReplayConfig
from ray_app.replay.run import replay_movielens
from ray_app.serving.config import ServeArgs
from ray_app.serving.run import start_serving
from ray_app.training.job import ModelSpec, TrainConfig, run_training

pytestmark = pytest.mark.integration


def test_replay_ingest_train_serve(
    broker: str, ray_session: None, ml100k: Any, tmp_path: Path
) -> None:
    from ray import serve

    settings = KafkaSettings(bootstrap_servers=broker)
    topic = "e2e-movielog"
    stats = replay_movielens(settings, ReplayConfig(topic=topic, users=60, watch_minutes=2))
    ratings = ml100k.ratings[ml100k.ratings.user_id.isin([str(u) for u in range(1, 61)])]
    assert stats.rate == len(ratings) and stats.watch == 2 * len(ratings)

    snaps = tmp_path / "snapshots"
    ist = run_ingest(
        settings,
        IngestConfig(
            topics=[topic],
            group_id="e2e",
            snapshot_dir=snaps,
            until_idle_s=3.0,
            max_batch_delay_s=1.0,
        ),
    )
    assert ist.records == stats.events
    assert ist.snapshot_rows == stats.events and ist.dead_letters == 0

    space = Path(__file__).resolve().parent.parent / "configs" / "tune" / "itemknn.yaml"
    models = [
        ModelSpec(name="ease"),
        ModelSpec(name="itemknn", tune=space, tune_samples=2),
        ModelSpec(name="popularity"),
    ]
    result = run_training(
        TrainConfig(snapshot_dir=snaps, registry=str(tmp_path / "registry"), models=models)
    )
    knn_manifest = next(mv for mv in result.versions if mv.name == "itemknn").manifest
    assert knn_manifest["tuning"]["best"], "the tuned config is what was registered"
    assert all(knn_manifest["config"][k] == v for k, v in knn_manifest["tuning"]["best"].items())
    assert "gender=F" in knn_manifest["metrics_by_group"]
    assert any(g.startswith("activity=") for g in knn_manifest["metrics_by_group"])
    assert {mv.name for mv in result.versions} == {"ease", "itemknn", "popularity"}
    assert result.interactions == len(ratings)
    knn = result.metrics["itemknn"]
    assert knn["ndcg@10"] > result.metrics["popularity"]["ndcg@10"] * 0.8
    assert 0 < knn["coverage"] <= 1

    port = free_port()
    start_serving(ServeArgs(registry=str(tmp_path / "registry")), "127.0.0.1", port)
    try:
        base = f"http://127.0.0.1:{port}"
        catalog = set(ratings.item_id)
        for user in ("1", "7", "42"):
            r = httpx.get(f"{base}/recommend/{user}", timeout=30)
            assert r.status_code == 200, r.text
            items = r.text.strip().split(",")
            seen = set(ratings[ratings.user_id == user].item_id)
            assert len(items) == 20 and len(set(items)) == 20
            assert set(items) <= catalog, "only movies the model knows"
            assert not set(items) & seen, "never a movie the user already rated"

        js = httpx.get(f"{base}/recommend/1?format=json", timeout=30).json()
        ease = next(mv.version for mv in result.versions if mv.name == "ease")
        assert (js["variant"], js["model"], js["model_version"]) == ("A", "ease", ease)
        assert js["known_user"] and not js["fallback"]
        assert js["items"] == httpx.get(f"{base}/recommend/1", timeout=30).text.split(",")

        unknown = httpx.get(f"{base}/recommend/999999", timeout=30).text.split(",")
        popular = ratings.item_id.value_counts().index[:20].tolist()
        # unknown users get the most-watched movies (ties at the cut may order differently)
        assert len(unknown) == 20 and len(set(unknown) & set(popular)) >= 15
        assert unknown[0] == popular[0]

        assert httpx.get(f"{base}/recommend/bad%20id!", timeout=30).status_code == 422
        assert httpx.get(f"{base}/recommend/1?k=0", timeout=30).status_code == 422
        assert httpx.get(f"{base}/healthz", timeout=30).json()["status"] == "ok"
    finally:
        serve.shutdown()
