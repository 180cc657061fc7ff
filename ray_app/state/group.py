"""State consumers as Ray actors in one consumer group (the state-side twin of
:mod:`ray_app.ingest.scale`): Kafka spreads the partitions across the actors; an actor that dies
is restarted by Ray and resumes from the store's offsets."""

from __future__ import annotations

import threading
from typing import Any, Self

import ray

from ray_app.broker.settings import KafkaSettings
from ray_app.state.config import StateConsumerConfig
from ray_app.state.consumer import StateConsumer, StateConsumerStats
from ray_app.state.metrics import StateMetrics


@ray.remote(num_cpus=0.25, max_restarts=-1, max_task_retries=-1)
class StateConsumerActor:
    """One group member; ``run`` blocks until ``stop``."""

    def __init__(
        self,
        settings: KafkaSettings,
        config: StateConsumerConfig,
        consumer_id: str,
        metrics_port: int | None = None,
    ) -> None:
        self.stop_event = threading.Event()
        self.metrics = StateMetrics(consumer_id=consumer_id)
        if metrics_port:
            self.metrics.serve(metrics_port)
        self.consumer = StateConsumer(settings, config, self.metrics, self.stop_event)

    def run(self) -> StateConsumerStats:
        return self.consumer.run()

    def stop(self) -> None:
        self.stop_event.set()

    def stats(self) -> StateConsumerStats:
        """What the consumer did so far (``run`` keeps going)."""
        return self.consumer.stats


class StateConsumerGroup:
    """``n`` state consumer actors of one group, consuming in the background until
    :meth:`stop`. Ray must be initialised; with ``metrics_base_port`` actor ``i`` serves
    ``/metrics`` on ``metrics_base_port + i``."""

    def __init__(
        self,
        settings: KafkaSettings,
        config: StateConsumerConfig,
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
        self._runs: list[ray.ObjectRef[StateConsumerStats]] = []

    def start(self) -> Self:
        """Start the actors and their consume loops; returns ``self``."""
        options: dict[str, Any] = {"max_concurrency": 2}
        if self.num_cpus is not None:
            options["num_cpus"] = self.num_cpus
        base = self.metrics_base_port
        self.actors = [
            StateConsumerActor.options(**options).remote(  # type: ignore[attr-defined]
                self.settings, self.config, str(i), base + i if base else None
            )
            for i in range(self.n)
        ]
        self._runs = [a.run.remote() for a in self.actors]
        return self

    def stats(self) -> list[StateConsumerStats]:
        """Each member's figures so far."""
        got: list[StateConsumerStats] = ray.get([a.stats.remote() for a in self.actors])
        return got

    def stop(self) -> list[StateConsumerStats]:
        """Ask every actor to leave the group; returns their stats."""
        if not self.actors:
            return []
        ray.get([a.stop.remote() for a in self.actors])
        stats: list[StateConsumerStats] = ray.get(self._runs)
        for a in self.actors:
            ray.kill(a)
        self.actors, self._runs = [], []
        return stats
