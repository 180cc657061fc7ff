"""Snapshots and the registry on object storage: a real S3-compatible server (moto_server),
started by the ``s3_server`` fixture, in every test here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow.fs as pafs
import pytest
from helpers import S3Server, write_ratings_snapshot
from typer.testing import CliRunner

from ray_app.broker.embedded import free_port
from ray_app.broker.settings import KafkaSettings
from ray_app.cli import app
from ray_app.ingest.config import IngestConfig
from ray_app.ingest.run import run_ingest
from ray_app.models.base import Interactions
from ray_app.models.popularity import Popularity
from ray_app.registry.signing import SignatureError
from ray_app.registry.store import MANIFEST, Registry
from ray_app.replay.events import ReplayConfig
from ray_app.replay.run import replay_movielens
from ray_app.serving.config import ServeArgs
from ray_app.serving.run import start_serving
from ray_app.snapshots.protocol import BatchId, batch_file
from ray_app.snapshots.store import SnapshotStore
from ray_app.training import interactions as interactions_module
from ray_app.training.data import load_training_data
from ray_app.training.interactions import FeedbackConfig, read_interactions
from ray_app.training.job import ModelSpec, TrainConfig, run_training

pytestmark = pytest.mark.integration


def _model() -> Popularity:
    frame = pd.DataFrame({"user_id": ["a", "a", "b", "c"], "item_id": ["x", "y", "x", "z"]})
    return Popularity().fit(Interactions.from_frame(frame))


def test_registry_on_s3_registers_lists_verifies_and_loads(s3_uri: str, tmp_path: Path) -> None:
    reg = Registry(s3_uri, cache=tmp_path / "cache")
    mv = reg.register(_model(), metrics={"ndcg@10": 0.5})
    assert reg.models() == ["popularity"] and reg.versions("popularity") == [mv.version]
    model, loaded = reg.load("popularity")
    assert loaded.manifest["metrics"] == {"ndcg@10": 0.5}
    assert model.recommend(["b"], k=2).items[0] == ["y", "z"]
    reg.set_alias("popularity", "production", mv.version)
    assert Registry(s3_uri).resolve("popularity", "production") == mv.version

    # An upload cut short (no rename on object storage): every file but the signature.
    partial = reg.path("popularity", "v99990101T000000000000Z", MANIFEST)
    with reg.fs.open_output_stream(partial) as fh:
        fh.write(b"{}")
    assert reg.versions("popularity") == [mv.version], "a version without signature is hidden"
    assert reg.latest("popularity") == mv.version

    # Tampering with the stored object is caught by a process that has not cached it yet.
    artifact = reg.path("popularity", mv.version, "artifact", "state.npz")
    with reg.fs.open_input_stream(artifact) as fh:
        data = bytearray(fh.read())
    data[len(data) // 2] ^= 0xFF
    with reg.fs.open_output_stream(artifact) as fh:
        fh.write(bytes(data))
    with pytest.raises(SignatureError, match=r"state\.npz"):
        Registry(s3_uri, cache=tmp_path / "other-cache").fetch("popularity", mv.version)


def test_training_reads_s3_snapshots_in_process_and_with_ray_data(
    s3_uri: str, ray_session: None, ml100k: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ratings = ml100k.ratings.iloc[:3000]
    nxt = write_ratings_snapshot(s3_uri, ratings.iloc[:1500])  # type: ignore[arg-type]
    write_ratings_snapshot(s3_uri, ratings.iloc[1500:], first=nxt)  # type: ignore[arg-type]
    store = SnapshotStore.at(s3_uri)
    # An object of a batch that never got its marker must not be read.
    orphan = BatchId("movielog", 0, 10_000, 10_099)
    store.put_parquet(batch_file("rate", orphan), store.read_table([]), orphan, "rate")

    data = load_training_data(s3_uri, FeedbackConfig())
    assert data.files == 2 and len(data.frame) == len(
        ratings.drop_duplicates(["user_id", "item_id"])
    )
    assert "test:test" not in data.provenance["dir"], "no credentials in manifests"
    assert [r["first"] for r in data.provenance["offset_ranges"]] == [0, 1500]

    # Large snapshots go through Ray Data, whose read tasks open S3 with the store's filesystem.
    monkeypatch.setattr(interactions_module, "LOCAL_READ_MAX_BYTES", 0)
    with_ray = read_interactions(store, store.durable(), FeedbackConfig())
    key = ["user_id", "item_id"]
    pd.testing.assert_frame_equal(
        with_ray.sort_values(key).reset_index(drop=True),
        data.frame.sort_values(key).reset_index(drop=True),
    )


def test_snapshot_commands_on_s3(s3_uri: str, ml100k: Any) -> None:
    first = write_ratings_snapshot(s3_uri, ml100k.ratings.iloc[:100])  # type: ignore[arg-type]
    write_ratings_snapshot(s3_uri, ml100k.ratings.iloc[100:200], first=first)  # type: ignore[arg-type]
    stats = CliRunner().invoke(app, ["snapshots", "stats", "--snapshot-dir", s3_uri])
    assert stats.exit_code == 0, stats.output
    assert "2 snapshot files" in stats.output and "test:test" not in stats.output
    compacted = CliRunner().invoke(app, ["snapshots", "compact", "--snapshot-dir", s3_uri])
    assert compacted.exit_code == 0, compacted.output
    assert "2 files → 1" in compacted.output
    assert [f.rel.endswith(".compacted.parquet") for f in SnapshotStore.at(s3_uri).durable()] == [
        True
    ]
    missing = CliRunner().invoke(
        app, ["snapshots", "stats", "--snapshot-dir", s3_uri.replace("/t-", "/nothing-")]
    )
    assert missing.exit_code == 2 and "ray-app ingest" in missing.output


@pytest.mark.slow
def test_ingest_train_register_serve_round_trip_on_s3(
    broker: str,
    ray_session: None,
    ml100k: Any,
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Snapshots and registry on S3, the two ways a deployment names object storage:

    - ingest writes to an ``s3://`` URI that carries endpoint and credentials, and the Serve
      replicas read the registry through such a URI too, so they need no environment;
    - training finds the snapshots under ``RAY_APP_HOME=s3://…`` (what a job's runtime_env sets
      on a cluster) from the relative location of the shipped configs, with the endpoint in
      ``AWS_ENDPOINT_URL``, as a user of MinIO would export it.
    """
    from ray import serve

    prefix = f"roundtrip-{free_port()}"
    settings = KafkaSettings(bootstrap_servers=broker)
    topic = f"s3-movielog-{prefix}"
    stats = replay_movielens(settings, ReplayConfig(topic=topic, users=40, watch_minutes=1))
    ist = run_ingest(
        settings,
        IngestConfig(
            topics=[topic],
            group_id=topic,
            snapshot_dir=s3_server.uri(f"{prefix}/snapshots"),
            until_idle_s=3.0,
            max_batch_delay_s=1.0,
        ),
    )
    assert ist.records == stats.events and ist.dead_letters == 0

    monkeypatch.setenv("RAY_APP_HOME", f"s3://{s3_server.bucket}/{prefix}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{s3_server.endpoint}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    registry = s3_server.uri(f"{prefix}/registry")
    result = run_training(
        TrainConfig(
            snapshot_dir=Path("snapshots"),
            registry=registry,
            models=[ModelSpec(name="ease"), ModelSpec(name="popularity")],
        )
    )
    assert result.interactions == stats.rate and result.snapshot_files == len(
        SnapshotStore.at(s3_server.uri(f"{prefix}/snapshots")).durable()
    )
    ease = next(mv.version for mv in result.versions if mv.name == "ease")
    fs, base = pafs.FileSystem.from_uri(registry)
    assert fs.get_file_info(f"{base}/ease/{ease}/signature.json").is_file

    port = free_port()
    start_serving(ServeArgs(registry=registry), "127.0.0.1", port)
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/recommend/1?format=json", timeout=60)
        assert r.status_code == 200, r.text
        js = r.json()
        assert (js["model"], js["model_version"]) == ("ease", ease)
        assert len(js["items"]) == 20 and not js["fallback"]
        plain = httpx.get(f"http://127.0.0.1:{port}/recommend/7", timeout=60)
        assert plain.status_code == 200 and len(plain.text.strip().split(",")) == 20
    finally:
        serve.shutdown()
