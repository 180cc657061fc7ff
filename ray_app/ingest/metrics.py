"""Prometheus metrics for ingestion (one registry per consumer; no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class IngestMetrics:
    """Counters, lag gauges and batch-latency histograms for one consumer."""

    def __init__(self, registry: CollectorRegistry | None = None, consumer_id: str = "0") -> None:
        self.registry = registry or CollectorRegistry()
        self.consumer_id = consumer_id
        labels = ["consumer", "topic", "partition"]
        self.records = Counter(
            "ray_app_ingest_records_total",
            "Records written to snapshots",
            labels,
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "ray_app_ingest_dead_letters_total",
            "Records sent to dead letters",
            labels,
            registry=self.registry,
        )
        self.bytes = Counter(
            "ray_app_ingest_bytes_total",
            "Raw record bytes consumed",
            labels,
            registry=self.registry,
        )
        self.batches = Counter(
            "ray_app_ingest_batches_total", "Batches made durable", labels, registry=self.registry
        )
        self.lag = Gauge(
            "ray_app_ingest_consumer_lag",
            "High-water mark minus next offset to write",
            labels,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "ray_app_ingest_batch_seconds",
            "Parse + write + commit time per batch",
            ["consumer"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def observe_batch(
        self, topic: str, partition: int, good: int, dead: int, raw_bytes: int, seconds: float
    ) -> None:
        lab = (self.consumer_id, topic, str(partition))
        self.records.labels(*lab).inc(good)
        self.dead_letters.labels(*lab).inc(dead)
        self.bytes.labels(*lab).inc(raw_bytes)
        self.batches.labels(*lab).inc()
        self.batch_seconds.labels(self.consumer_id).observe(seconds)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag.labels(self.consumer_id, topic, str(partition)).set(max(lag, 0))

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose ``/metrics`` on ``port`` for Prometheus to scrape."""
        start_http_server(port, addr=addr, registry=self.registry)
