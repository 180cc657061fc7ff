"""N snapshot consumers as Ray actors in one consumer group.

Kafka's group protocol spreads partitions across the actors; an actor that dies is restarted by
Ray (``max_restarts``) and rejoins the group, and its partitions resume from the commit markers
on disk, so a restart neither loses nor duplicates records.
"""

from __future__ import annotations

import threading

import ray

from ray_app.broker.settings import KafkaSettings
from ray_app.ingest.config import IngestConfig
from ray_app.ingest.consumer import IngestStats, SnapshotConsumer
from ray_app.ingest.metrics import IngestMetrics


@ray.remote(num_cpus=0.5, max_restarts=-1, max_task_retries=-1)
class ConsumerActor:
    """One group member; ``run`` blocks until idle or ``stop``."""

    def __init__(
        self,
        settings: KafkaSettings,
        config: IngestConfig,
        consumer_id: str,
        metrics_port: int | None = None,
    ) -> None:
        self.stop_event = threading.Event()
        self.metrics = IngestMetrics(consumer_id=consumer_id)
        if metrics_port:
            self.metrics.serve(metrics_port)
        self.consumer = SnapshotConsumer(settings, config, self.metrics, self.stop_event)

    def run(self) -> IngestStats:
        return self.consumer.run()

    def stop(self) -> None:
        self.stop_event.set()

    def partitions(self) -> list[tuple[str, int]]:
        return sorted(self.consumer.stats.partitions)


def run_consumer_actors(
    settings: KafkaSettings, config: IngestConfig, n: int, metrics_base_port: int | None = None
) -> IngestStats:
    """Start ``n`` actors (max_concurrency 2 so ``stop`` can interrupt ``run``) and merge stats.

    With ``metrics_base_port``, actor ``i`` serves ``/metrics`` on ``metrics_base_port + i``.
    """
    actors = [
        ConsumerActor.options(max_concurrency=2).remote(  # type: ignore[attr-defined]
            settings, config, str(i), metrics_base_port + i if metrics_base_port else None
        )
        for i in range(n)
    ]
    refs = [a.run.remote() for a in actors]
    try:
        results: list[IngestStats] = ray.get(refs)
    except KeyboardInterrupt:
        ray.get([a.stop.remote() for a in actors])
        results = ray.get(refs)
    return merge_stats(results)


def merge_stats(results: list[IngestStats]) -> IngestStats:
    """One group's stats from its members' (times: the longest member's)."""
    out = IngestStats()
    for r in results:
        out.records += r.records
        out.snapshot_rows += r.snapshot_rows
        out.dead_letters += r.dead_letters
        out.batches += r.batches
        out.files.extend(r.files)
        out.seconds = max(out.seconds, r.seconds)
        out.partitions |= r.partitions
    return out
