"""N snapshot consumers as Ray actors in one consumer group.

Kafka's group protocol spreads partitions across the actors; an actor that dies (or whose node
goes away) is restarted by Ray (``max_restarts``) and rejoins the group, and its partitions
resume from the commit markers on disk, so a restart neither loses nor duplicates records. The
actors are placed with Ray's SPREAD strategy, so on a cluster they land on different nodes.

A member whose group join does not complete within ``join_deadline_s`` (it once hung for good
on Tansu after a restart) exits its actor process; Ray recreates the actor, which joins afresh.

:class:`ConsumerGroup` runs the actors in the background (start → stats → stop, which flushes and
commits); :func:`run_consumer_actors` runs them in the foreground until idle or Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Self

import ray
from kafka import TopicPartition

from ray_app.broker.settings import KafkaSettings
from ray_app.ingest.config import IngestConfig
from ray_app.ingest.consumer import IngestStats, SnapshotConsumer
from ray_app.ingest.metrics import IngestMetrics

log = logging.getLogger(__name__)

STUCK_JOIN_EXIT_CODE = 75
"""Exit status of an actor process that gave up on a stuck group join (EX_TEMPFAIL)."""


def default_join_deadline_s(config: IngestConfig) -> float:
    """How long a join may take before it counts as stuck: a healthy one can wait up to the
    rebalance timeout (``max_poll_interval_ms``) for the other members, plus a margin."""
    return config.max_poll_interval_ms / 1000 + config.session_timeout_ms / 1000 + 30.0


class _JoinTrackingConsumer(SnapshotConsumer):
    """A :class:`SnapshotConsumer` that knows since when it has been outside the group."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unjoined_since: float | None = time.monotonic()
        """``time.monotonic()`` when the member last left the group (None: it is in it)."""

    def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        self.unjoined_since = time.monotonic()  # a rebalance: a join follows
        super()._on_revoked(revoked)

    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        # Called after every completed join, also with no partition for this member.
        self.unjoined_since = None
        super()._on_assigned(assigned)


@ray.remote(num_cpus=0.5, max_restarts=-1, max_task_retries=-1)
class ConsumerActor:
    """One group member; ``run`` blocks until idle or ``stop``."""

    def __init__(
        self,
        settings: KafkaSettings,
        config: IngestConfig,
        consumer_id: str,
        metrics_port: int | None = None,
        join_deadline_s: float | None = None,
    ) -> None:
        self.stop_event = threading.Event()
        self.metrics = IngestMetrics(consumer_id=consumer_id)
        if metrics_port:
            self.metrics.serve(metrics_port)
        self.consumer = _JoinTrackingConsumer(settings, config, self.metrics, self.stop_event)
        self.consumer_id = consumer_id
        self.join_deadline_s = join_deadline_s or default_join_deadline_s(config)

    def run(self) -> IngestStats:
        done = threading.Event()
        watchdog = threading.Thread(
            target=self._watch_join, args=(done,), name="join-watchdog", daemon=True
        )
        watchdog.start()
        try:
            return self.consumer.run()
        finally:
            done.set()

    def _watch_join(self, done: threading.Event) -> None:
        while not done.wait(1.0) and not self.stop_event.is_set():
            since = self.consumer.unjoined_since
            if since is not None and time.monotonic() - since > self.join_deadline_s:
                log.error(
                    "consumer %s: no group join for %.0fs; exiting so that Ray recreates it",
                    self.consumer_id,
                    time.monotonic() - since,
                )
                # A join stuck inside kafka-python cannot be interrupted from here; a fresh
                # process can. The markers on disk make the restart lose and repeat nothing.
                os._exit(STUCK_JOIN_EXIT_CODE)

    def stop(self) -> None:
        self.stop_event.set()

    def stats(self) -> IngestStats:
        """What the consumer did so far (``run`` keeps going)."""
        return self.consumer.stats

    def partitions(self) -> list[tuple[str, int]]:
        return sorted(self.consumer.stats.partitions)

    def node_id(self) -> str:
        """The Ray node this actor runs on."""
        return str(ray.get_runtime_context().get_node_id())

    def pid(self) -> int:
        """The actor's process id (a recreated actor has a new one)."""
        return os.getpid()


class ConsumerGroup:
    """``n`` consumer actors of one group, consuming in the background until :meth:`stop`.

    Ray must be initialised. Each actor has ``max_concurrency`` 2 so that ``stats`` and ``stop``
    reach it while ``run`` is busy; the actors are spread over the nodes. With
    ``metrics_base_port``, actor ``i`` serves ``/metrics`` on ``metrics_base_port + i``;
    ``num_cpus`` overrides the actors' CPU reservation (a demo on a laptop reserves less than a
    cluster would); ``resources`` adds custom Ray resources each actor needs (e.g. to keep
    ingest on the nodes that declare ``{"ingest": 1}``); ``join_deadline_s`` overrides
    :func:`default_join_deadline_s`.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        config: IngestConfig,
        n: int = 1,
        metrics_base_port: int | None = None,
        num_cpus: float | None = None,
        resources: dict[str, float] | None = None,
        join_deadline_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.n = n
        self.metrics_base_port = metrics_base_port
        self.num_cpus = num_cpus
        self.resources = resources
        self.join_deadline_s = join_deadline_s
        self.actors: list[Any] = []
        self._runs: list[ray.ObjectRef[IngestStats]] = []

    def start(self) -> Self:
        """Start the actors and their consume loops; returns ``self``."""
        # SPREAD: one node's loss takes as few members as it can with it.
        options: dict[str, Any] = {"max_concurrency": 2, "scheduling_strategy": "SPREAD"}
        if self.num_cpus is not None:
            options["num_cpus"] = self.num_cpus
        if self.resources:
            options["resources"] = self.resources
        base = self.metrics_base_port
        self.actors = [
            ConsumerActor.options(**options).remote(  # type: ignore[attr-defined]
                self.settings, self.config, str(i), base + i if base else None, self.join_deadline_s
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
