"""Prometheus metrics of the state consumer (one registry per consumer; no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ray_app.state.store import StateSize


class StateMetrics:
    """Event-to-state lag per partition (seconds and offsets), state size, write latency."""

    def __init__(self, registry: CollectorRegistry | None = None, consumer_id: str = "0") -> None:
        self.registry = registry or CollectorRegistry()
        self.consumer_id = consumer_id
        labels = ["consumer", "topic", "partition"]
        self.events = Counter(
            "ray_app_state_events_total",
            "Watch and rate events written to the state store (replays included)",
            labels,
            registry=self.registry,
        )
        self.skipped = Counter(
            "ray_app_state_replayed_total",
            "Re-delivered events skipped because the store already had their offset",
            ["consumer"],
            registry=self.registry,
        )
        self.lag_seconds = Gauge(
            "ray_app_state_lag_seconds",
            "Store-write time minus event time of the newest event applied",
            labels,
            registry=self.registry,
        )
        self.lag_offsets = Gauge(
            "ray_app_state_lag_offsets",
            "High-water mark minus the consumer's position",
            labels,
            registry=self.registry,
        )
        self.users = Gauge(
            "ray_app_state_users", "Users with a history", ["consumer"], registry=self.registry
        )
        self.entries = Gauge(
            "ray_app_state_history_entries",
            "History entries over all users",
            ["consumer"],
            registry=self.registry,
        )
        self.items = Gauge(
            "ray_app_state_trending_items",
            "Items with a trending count",
            ["consumer"],
            registry=self.registry,
        )
        self.write_seconds = Histogram(
            "ray_app_state_write_seconds",
            "Parse + store write + commit time per poll",
            ["consumer"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )

    def observe_partition(
        self, topic: str, partition: int, events: int, lag_s: float | None
    ) -> None:
        """Count one partition's events of a write; ``lag_s`` of its newest event, if any."""
        lab = (self.consumer_id, topic, str(partition))
        self.events.labels(*lab).inc(events)
        if lag_s is not None:
            self.lag_seconds.labels(*lab).set(max(lag_s, 0.0))

    def observe_write(self, skipped: int, seconds: float) -> None:
        """One store write: events skipped as replays, and how long it took."""
        self.skipped.labels(self.consumer_id).inc(skipped)
        self.write_seconds.labels(self.consumer_id).observe(seconds)

    def set_offset_lag(self, topic: str, partition: int, lag: int) -> None:
        """Records waiting in a partition."""
        self.lag_offsets.labels(self.consumer_id, topic, str(partition)).set(max(lag, 0))

    def set_size(self, size: StateSize) -> None:
        """What the store holds."""
        self.users.labels(self.consumer_id).set(size.users)
        self.entries.labels(self.consumer_id).set(size.entries)
        self.items.labels(self.consumer_id).set(size.items)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose ``/metrics`` on ``port`` for Prometheus to scrape."""
        start_http_server(port, addr=addr, registry=self.registry)
