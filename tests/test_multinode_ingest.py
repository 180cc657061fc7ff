"""Ingest on a Ray cluster of three nodes on this machine (``ray.cluster_utils.Cluster``): the
consumer actors land on different worker nodes, and when one node goes away mid-stream its
partitions pass to the survivor and every produced offset still lands exactly once."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from helpers import assert_exactly_once, head_and_two_workers, landed_offsets, wait_until
from kafka import KafkaProducer
from ray.cluster_utils import Cluster

from ray_app.broker.embedded import create_topics
from ray_app.broker.settings import KafkaSettings
from ray_app.ingest.config import IngestConfig
from ray_app.ingest.scale import ConsumerGroup

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4
INGEST = {"ingest": 1.0}
"""The custom resource the worker nodes declare: ingest actors run only there."""


@pytest.fixture()
def cluster() -> Iterator[tuple[Cluster, list[Any]]]:
    """A head that runs no actors and two worker nodes with the ``ingest`` resource."""
    with head_and_two_workers({"num_cpus": 0}, {"num_cpus": 1, "resources": INGEST}) as got:
        yield got


def _produce(broker: str, topic: str, start: int, n: int) -> set[tuple[int, int]]:
    p = KafkaProducer(**KafkaSettings(bootstrap_servers=broker).producer_kwargs(), linger_ms=5)
    futures = [
        p.send(
            topic,
            f"2024-03-01T00:00:{i % 60:02d},{i % 50},GET /data/m/{i % 40}/1.mpg".encode(),
            partition=i % PARTITIONS,
        )
        for i in range(start, start + n)
    ]
    p.flush()
    p.close()
    return {(f.get().partition, f.get().offset) for f in futures}


def test_multinode_ingest_spreads_and_survives_a_node_loss(
    broker: str, cluster: tuple[Cluster, list[Any]], tmp_path: Path
) -> None:
    c, workers = cluster
    topic = f"multinode-{os.getpid()}-{time.monotonic_ns()}"
    settings = KafkaSettings(bootstrap_servers=broker)
    create_topics(settings, {topic: PARTITIONS})
    produced = _produce(broker, topic, 0, 8_000)
    snaps = str(tmp_path / "snap")
    cfg = IngestConfig(
        topics=[topic],
        group_id=f"g-{topic}",
        snapshot_dir=snaps,
        max_batch_records=500,
        max_poll_records=250,
        max_batch_delay_s=0.3,
    )
    group = ConsumerGroup(settings, cfg, n=2, num_cpus=0.5, resources={"ingest": 0.5})
    group.start()
    try:
        nodes = ray.get([a.node_id.remote() for a in group.actors], timeout=120)
        worker_ids = {w.node_id for w in workers}
        assert len(set(nodes)) == 2 and set(nodes) == worker_ids, "one actor per worker node"
        wait_until(
            lambda: all(ray.get([a.partitions.remote() for a in group.actors], timeout=10)),
            120,
            what="both members to own partitions",
        )
        wait_until(lambda: group.durable_records() >= 2_000, 120, what="2000 durable records")

        # Mid-stream: more records arrive while one worker node dies without warning.
        more: set[tuple[int, int]] = set()
        producer = threading.Thread(
            target=lambda: more.update(_produce(broker, topic, 8_000, 8_000)), daemon=True
        )
        producer.start()
        lost = workers[1]
        survivor = workers[0].node_id
        c.remove_node(lost, allow_graceful=False)
        producer.join(timeout=120)
        assert len(more) == 8_000
        produced |= more

        # Ray recreates the lost member on the survivor; the group gives it partitions again.
        wait_until(
            lambda: (
                set(ray.get([a.node_id.remote() for a in group.actors], timeout=30)) == {survivor}
            ),
            180,
            what="every member to run on the surviving node",
        )
        wait_until(
            lambda: set(landed_offsets(snaps)[0]) >= produced,
            300,
            what="every produced offset to land",
        )
        owned = ray.get([a.partitions.remote() for a in group.actors], timeout=30)
        assert {p for o in owned for _, p in o} == set(range(PARTITIONS))
    finally:
        group.stop()
    seen, dead = landed_offsets(snaps)
    assert dead == 0
    assert_exactly_once(seen, produced)
