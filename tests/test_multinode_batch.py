"""Ray Data on a cluster of three nodes on this machine (``ray.cluster_utils.Cluster``): the
train job's snapshot read and ``recommend-all``'s scoring run on both worker nodes, and give
what one process computes alone."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import ray
from helpers import head_and_two_workers, wait_until, write_ratings_snapshot
from ray.util.state import list_actors, list_tasks

from ray_app.batch.all_users import recommend_all
from ray_app.batch.ranking import lists_table, rank_with_fill
from ray_app.broker.embedded import free_port
from ray_app.data.synth import generate
from ray_app.models.base import Interactions
from ray_app.models.itemknn import ItemKNN
from ray_app.registry.store import Registry
from ray_app.snapshots import read as snapshot_read
from ray_app.snapshots.store import SnapshotStore
from ray_app.training import interactions as training_interactions
from ray_app.training.interactions import TRAINING_KINDS, FeedbackConfig, read_interactions

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCHES = 6
"""Snapshot batches (files) written: one Ray Data read task each in the test below."""


@pytest.fixture()
def cluster() -> Iterator[tuple[str, list[Any]]]:
    """A head that runs no work and two worker nodes; yields its address and the workers."""
    # The state API (which node ran what) needs the dashboard; a free port, as 8265 may be
    # another cluster's.
    head = {"num_cpus": 0, "dashboard_port": free_port()}
    with head_and_two_workers(head, {"num_cpus": 2}) as (c, workers):
        yield c.address, workers


def _nodes_of(listing: Any, name_part: str, field: str) -> set[str]:
    return {r.node_id for r in listing if name_part in getattr(r, field)}


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["user_id", "item_id"]).reset_index(drop=True)


def test_multinode_train_read_and_recommend_all_use_both_workers(
    cluster: tuple[str, list[Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, workers = cluster
    worker_ids = {w.node_id for w in workers}
    data = generate(24_000, 400, 600, seed=11)
    assert data.ratings is not None
    snaps = tmp_path / "snap"
    offset = 0
    edges = np.linspace(0, len(data.ratings), BATCHES + 1).astype(int)
    for lo, hi in itertools.pairwise(edges):
        offset = write_ratings_snapshot(snaps, data.ratings.iloc[lo:hi], first=offset)
    store = SnapshotStore.at(str(snaps))
    files = store.durable(TRAINING_KINDS)
    assert len(files) == BATCHES

    # Single-process reference: below LOCAL_READ_MAX_BYTES the read runs without Ray.
    alone = read_interactions(str(snaps), files, FeedbackConfig())
    # A snapshot this small would be read in one task; as if each file were a large one, force
    # the Ray Data path with a read task per file.
    monkeypatch.setattr(training_interactions, "LOCAL_READ_MAX_BYTES", 0)
    monkeypatch.setattr(snapshot_read, "BYTES_PER_READ_TASK", 1)
    on_cluster = read_interactions(str(snaps), files, FeedbackConfig())
    pd.testing.assert_frame_equal(_sorted(on_cluster), _sorted(alone), check_like=True)

    def read_nodes() -> set[str]:
        return _nodes_of(list_tasks(address, detail=True, limit=10_000), "ReadParquet", "name")

    # Task events reach the state API a little after the tasks ran.
    wait_until(lambda: read_nodes() == worker_ids, 60, what="read tasks on both worker nodes")

    # recommend-all: a model trained on that read, scored by a Ray Data actor pool. Ray Data
    # starts actors asynchronously; on a loaded machine the first one can score every batch
    # before the second is up, so wait for both (the datasets copy this context).
    monkeypatch.setattr(ray.data.DataContext.get_current(), "wait_for_min_actors_s", 180)
    model = ItemKNN().fit(Interactions.from_frame(alone))
    Registry(tmp_path / "reg").register(model)
    result = recommend_all(str(tmp_path / "reg"), "itemknn", tmp_path / "out", k=10, batch_size=50)
    assert result.users == alone["user_id"].nunique()

    def scoring_nodes() -> tuple[set[str], set[str]]:
        listed = list_actors(address, detail=True, limit=10_000)
        actors = _nodes_of(listed, "_Scorer", "class_name")
        # Batches scored, not just actors started: an actor pool fed one block keeps one idle.
        tasks = list_tasks(address, detail=True, limit=10_000)
        # ``.submit`` is a batch; each actor also answers ``get_location`` calls, idle or not.
        work = {t.node_id for t in tasks if "_Scorer" in t.name and t.name.endswith(".submit")}
        return actors, work

    seen: list[tuple[set[str], set[str]]] = []

    def on_both() -> bool:
        seen.append(scoring_nodes())
        return seen[-1] == (worker_ids, worker_ids)

    with contextlib.suppress(AssertionError):  # the assert below shows what was last seen
        wait_until(on_both, 60, what="batches scored on both worker nodes")
    assert seen[-1] == (worker_ids, worker_ids), f"(actor nodes, batch nodes) {seen[-1]}"
    out = pd.read_parquet(tmp_path / "out").sort_values(["user_id", "rank"])
    ids = [str(u) for u in model.interactions.user_ids]
    expected = lists_table(ids, rank_with_fill(model, ids, 10), model.interactions.item_ids)
    want = expected.to_pandas().sort_values(["user_id", "rank"])
    assert result.rows == len(out) == len(want)
    cols = ["user_id", "rank", "item_id", "score"]
    pd.testing.assert_frame_equal(
        out[cols].reset_index(drop=True), want[cols].reset_index(drop=True), check_dtype=False
    )
