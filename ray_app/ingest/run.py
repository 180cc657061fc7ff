"""Run ingestion: one consumer in this process, or N consumer actors on Ray in one group."""

from __future__ import annotations

import signal
import threading

from ray_app.broker.settings import KafkaSettings
from ray_app.ingest.config import IngestConfig
from ray_app.ingest.consumer import IngestStats, SnapshotConsumer
from ray_app.ingest.metrics import IngestMetrics


def metrics_ports(metrics_port: int | None, consumers: int) -> list[int]:
    """The ``/metrics`` ports ingestion serves: ``metrics_port + i`` for consumer ``i``."""
    return [metrics_port + i for i in range(consumers)] if metrics_port else []


def run_ingest(
    settings: KafkaSettings,
    config: IngestConfig,
    consumers: int = 1,
    metrics_port: int | None = None,
) -> IngestStats:
    """Consume ``config.topics`` into snapshots until idle (``config.until_idle_s``) or stopped.

    With ``consumers == 1`` the consumer runs here and SIGTERM/SIGINT flush and commit before
    it returns. With more, ``consumers`` Ray actors join one group (Ray must be initialised);
    each serves its own ``/metrics`` on ``metrics_port + i`` (see :func:`metrics_ports`).
    """
    if consumers > 1:
        # Imported here so that a single consumer never pays for importing Ray.
        from ray_app.ingest.scale import run_consumer_actors

        return run_consumer_actors(settings, config, consumers, metrics_port)
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        metrics = IngestMetrics()
        if metrics_port:
            metrics.serve(metrics_port)
        return SnapshotConsumer(settings, config, metrics, stop).run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
