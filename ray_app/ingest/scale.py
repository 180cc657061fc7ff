"""N snapshot consumers as Ray actors in one consumer group.

Kafka's group protocol spreads partitions across the actors; an actor that dies is restarted by
Ray (``max_restarts``) and rejoins the group, and its partitions resume from the commit markers
on disk, so a restart neither loses nor duplicates records.

:class:`ConsumerGroup` runs the actors in the background (start → stats → stop, which flushes and
commits); :func:`run_consumer_actors` runs them in the foreground until idle or Ctrl-C.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Self

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

    def stats(self) -> IngestStats:
        """What the consumer did so far (``run`` keeps going)."""
        return self.consumer.stats

    def partitions(self) -> list[tuple[str, int]]:
        return sorted(self.consumer.stats.partitions)


class ConsumerGroup:
    """``n`` consumer actors of one group, consuming in the background until :meth:`stop`.

    Ray must be initialised. Each actor has ``max_concurrency`` 2 so that ``stats`` and ``stop``
    reach it while ``run`` is busy. With ``metrics_base_port``, actor ``i`` serves ``/metrics``
    on ``metrics_base_port + i``; ``num_cpus`` overrides the actors' CPU reservation (a demo on a
    laptop reserves less than a cluster would).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        config: IngestConfig,
        n: int = 1,
        metrics_base_port: int | None = None,
        num_cpus: float | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.n = n
        self.metrics_base_port = metrics_base_port
        self.num_cpus = num_cpus
        self.actors: list[Any] = []
        self._runs: list[ray.ObjectRef[IngestStats]] = []

    def start(self) -> Self:
        """Start the actors and their consume loops; returns ``self``."""
        options: dict[str, Any] = {"max_concurrency": 2}
        if self.num_cpus is not None:
            options["num_cpus"] = self.num_cpus
        base = self.metrics_base_port
        self.actors = [
            ConsumerActor.options(**options).remote(  # type: ignore[attr-defined]
                self.settings, self.config, str(i), base + i if base else None
            )
            for i in range(self.n)
        ]
        self._runs = [a.run.remote() for a in self.actors]
        return self

    def stats(self) -> IngestStats:
        """The group's figures so far (a member that is restarting counts from its restart)."""
        return merge_stats(ray.get([a.stats.remote() for a in self.actors]))

    def durable_records(self) -> int:
        """Records made durable so far: in snapshots or in dead letters (each lands in one)."""
        s = self.stats()
        return s.snapshot_rows + s.dead_letters

    def wait_durable(self, records: int, timeout_s: float, poll_s: float = 0.5) -> bool:
        """Wait until at least ``records`` records are durable; False if ``timeout_s`` passed
        first (or the consume loops ended)."""
        deadline = time.monotonic() + timeout_s
        while self.durable_records() < records:
            done, _ = ray.wait(self._runs, num_returns=len(self._runs), timeout=0)
            if len(done) == len(self._runs) or time.monotonic() >= deadline:
                return self.durable_records() >= records
            time.sleep(poll_s)
        return True

    def wait(self) -> IngestStats:
        """Block until every consume loop ends (idle, or :meth:`stop`); the group's stats."""
        return merge_stats(ray.get(self._runs))

    def stop(self) -> IngestStats:
        """Ask every actor to flush, commit and leave the group; returns the group's stats."""
        if not self.actors:
            return IngestStats()
        ray.get([a.stop.remote() for a in self.actors])
        stats = self.wait()
        for a in self.actors:
            ray.kill(a)
        self.actors, self._runs = [], []
        return stats


def run_consumer_actors(
    settings: KafkaSettings, config: IngestConfig, n: int, metrics_base_port: int | None = None
) -> IngestStats:
    """Run ``n`` actors in one group until they are idle (``config.until_idle_s``) or Ctrl-C,
    which flushes and commits; returns the merged stats.

    With ``metrics_base_port``, actor ``i`` serves ``/metrics`` on ``metrics_base_port + i``.
    """
    group = ConsumerGroup(settings, config, n, metrics_base_port).start()
    try:
        return group.wait()
    except KeyboardInterrupt:
        return group.stop()


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
