"""A consumer group of Ray actors in the background (what the demo runs for its whole length):
start → durable figures while it runs → stop, which flushes and commits; a member whose group
join hangs is recreated."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from helpers import wait_until
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ray_app.broker.embedded import ensure_topics
from ray_app.broker.settings import KafkaSettings
from ray_app.ingest.config import IngestConfig
from ray_app.ingest.scale import ConsumerGroup

pytestmark = pytest.mark.integration


def _produce(broker: str, topic: str, start: int, n: int) -> None:
    p = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
    for i in range(start, start + n):
        line = f"2024-03-01T00:00:{i % 60:02d},{i % 50},GET /data/m/{i % 40}/1.mpg"
        p.send(topic, line.encode(), partition=i % 2)
    p.flush()
    p.close()


def _committed(broker: str, group: str, topic: str) -> int:
    c = KafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
    try:
        return sum(c.committed(TopicPartition(topic, p)) or 0 for p in (0, 1))
    finally:
        c.close()


def test_group_runs_in_the_background_until_stopped(
    broker: str, ray_session: None, tmp_path: Path
) -> None:
    topic = f"group-{os.getpid()}-{time.monotonic_ns()}"
    ensure_topics(broker, {topic: 2})
    cfg = IngestConfig(
        topics=[topic],
        group_id=f"g-{topic}",
        snapshot_dir=str(tmp_path),
        max_batch_delay_s=0.5,
        max_batch_records=10_000,
    )
    group = ConsumerGroup(KafkaSettings(bootstrap_servers=broker), cfg, n=2, num_cpus=0.1)
    group.start()
    try:
        _produce(broker, topic, 0, 3_000)
        assert group.wait_durable(3_000, timeout_s=120)
        # Still consuming: what arrives later lands too, with no restart.
        _produce(broker, topic, 3_000, 500)
        assert group.wait_durable(3_500, timeout_s=60)
        running = group.stats()
        assert running.records == 3_500 and running.snapshot_rows == 3_500
        assert not group.wait_durable(3_501, timeout_s=1), "nothing more was produced"
    finally:
        stats = group.stop()
    assert stats.snapshot_rows + stats.dead_letters == 3_500
    assert {p for _, p in stats.partitions} == {0, 1}
    # stop() committed what was durable: the group resumes after the last record.
    assert _committed(broker, cfg.group_id, topic) == 3_500
    assert group.stop().records == 0  # stopping twice is harmless


def test_a_member_stuck_joining_is_recreated(ray_session: None, tmp_path: Path) -> None:
    import ray

    from ray_app.ingest.scale import ConsumerActor

    # A "broker" that accepts connections and never answers: the join can never complete.
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        settings = KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{hole.getsockname()[1]}",
            bootstrap_timeout_ms=600_000,  # kafka-python alone would wait ten minutes
            request_timeout_ms=300_000,
        )
        cfg = IngestConfig(topics=["t"], group_id="stuck", snapshot_dir=str(tmp_path))
        actor = ConsumerActor.options(max_concurrency=2, num_cpus=0.1).remote(  # type: ignore[attr-defined]
            settings, cfg, "0", None, 3.0
        )
        try:
            actor.run.remote()
            first = ray.get(actor.pid.remote(), timeout=60)
            recreated = wait_until(
                lambda: ray.get(actor.pid.remote(), timeout=10) != first,
                timeout=90,
                what="the stuck member's actor to be recreated",
            )
            assert recreated
        finally:
            ray.kill(actor)
