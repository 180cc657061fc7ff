"""The state consumer: activity records → the state store, seconds after they are produced.

A member of its own consumer group (``StateConsumerConfig.group_id``), so it reads every record
independently of ingest. Each poll's records are parsed with the ingest parsers, their watch and
rate events written to the store in one :meth:`StateStore.append` (atomic with the partitions'
next offsets), and only then are the offsets committed to Kafka: a crash loses nothing.

The store's offsets, not Kafka's, say where to resume: a newly assigned partition seeks to the
store's next offset, or to the beginning when the store has none (a fresh or lost store is
rebuilt from the topic's retention). Re-delivered records below the store's offset are skipped
by the store, so a restart never double-counts. Malformed records are skipped here; ingest
dead-letters them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from ray_app.broker.settings import KafkaSettings
from ray_app.events.json_dialect import kind_for_topic, parse_json_batch
from ray_app.events.line_dialect import parse_line_batch
from ray_app.state.config import StateConsumerConfig
from ray_app.state.metrics import StateMetrics
from ray_app.state.open_store import open_store
from ray_app.state.store import Activity, StateStore

log = logging.getLogger(__name__)


@dataclass
class StateConsumerStats:
    """What one state consumer did so far."""

    records: int = 0
    applied: int = 0
    skipped: int = 0
    ignored: int = 0
    """Records that are not watch/rate events, or failed to parse (ingest dead-letters them)."""
    writes: int = 0
    partitions: set[tuple[str, int]] = field(default_factory=set)
    last_lag_s: float | None = None
    """Event-to-state lag of the newest event applied (store-write time minus event time)."""


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: StateConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Nothing is buffered between polls (each poll is written and committed before the
        # next), so there is nothing to flush; the new owner resumes from the store's offsets.
        self.owner.pending.difference_update(revoked)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # Blocking consumer calls are not allowed on this thread: the loop seeks after poll().
        self.owner.pending.update(assigned)


def activities(table: pa.Table) -> list[Activity]:
    """The watch and rate events of a parsed snapshot-schema table, in order."""
    keep = pc.and_(
        pc.is_in(table["kind"], pa.array(["watch", "rate"])), pc.is_valid(table["movie_id"])
    )
    t = table.filter(keep)
    if t.num_rows == 0:
        return []
    ts_s = pc.divide(pc.cast(pc.cast(t["ts"], pa.timestamp("us")), pa.int64()), 1e6)
    cols = zip(
        t["user_id"].to_pylist(),
        t["movie_id"].to_pylist(),
        ts_s.to_pylist(),
        t["kind"].to_pylist(),
        t["topic"].to_pylist(),
        t["partition"].to_pylist(),
        t["offset"].to_pylist(),
        t["rating"].to_pylist(),
        strict=True,
    )
    return [Activity(u, m, s, k, tp, p, o, r) for u, m, s, k, tp, p, o, r in cols]


class StateConsumer:
    """One member of the state consumer group; :meth:`run` loops until ``stop`` is set."""

    def __init__(
        self,
        kafka: KafkaSettings,
        config: StateConsumerConfig,
        metrics: StateMetrics | None = None,
        stop: threading.Event | None = None,
        store: StateStore | None = None,
    ) -> None:
        self.kafka = kafka
        self.config = config
        self.metrics = metrics or StateMetrics()
        self.stop = stop or threading.Event()
        self.store = store if store is not None else open_store(config.state)
        self.stats = StateConsumerStats()
        self.pending: set[TopicPartition] = set()
        self._consumer: KafkaConsumer | None = None

    def _resume(self) -> None:
        assert self._consumer is not None
        assigned, self.pending = set(self.pending), set()
        stored = self.store.offsets()
        for tp in assigned:
            nxt = stored.get((tp.topic, tp.partition))
            if nxt is None:
                log.info("%s: no state for it yet; reading from the beginning", tp)
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, nxt)
            self.stats.partitions.add((tp.topic, tp.partition))

    def _parse(self, tp: TopicPartition, msgs: list[ConsumerRecord]) -> list[Activity]:
        values = [m.value for m in msgs]
        offsets = [m.offset for m in msgs]
        c = self.config
        if c.dialect == "line":
            parsed = parse_line_batch(
                values, topic=tp.topic, partitions=tp.partition, offsets=offsets
            )
        else:
            kind = kind_for_topic(c.json_topic_prefix, tp.topic)
            if kind not in ("watch", "rate"):
                return []
            parsed = parse_json_batch(
                values, kind=kind, topic=tp.topic, partitions=tp.partition, offsets=offsets
            )
        return activities(parsed.good)

    def _apply(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        assert self._consumer is not None
        t0 = time.perf_counter()
        events: list[Activity] = []
        newest: dict[TopicPartition, float] = {}
        commits: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, msgs in polled.items():
            if not msgs:
                continue
            got = self._parse(tp, msgs)
            events.extend(got)
            if got:
                newest[tp] = max(e.ts for e in got)
            self.stats.records += len(msgs)
            self.stats.ignored += len(msgs) - len(got)
            commits[tp] = OffsetAndMetadata(msgs[-1].offset + 1, "", -1)
        result = self.store.append(events)
        # Only now is the state durable in the store: committing earlier could lose events.
        if commits:
            self._consumer.commit(commits)
        now = time.time()
        self.stats.applied += result.applied
        self.stats.skipped += result.skipped
        self.stats.writes += 1
        per_tp: dict[tuple[str, int], int] = {}
        for e in events:
            per_tp[(e.topic, e.partition)] = per_tp.get((e.topic, e.partition), 0) + 1
        for tp in commits:
            lag = now - newest[tp] if tp in newest else None
            n = per_tp.get((tp.topic, tp.partition), 0)
            self.metrics.observe_partition(tp.topic, tp.partition, n, lag)
        self.metrics.observe_write(result.skipped, time.perf_counter() - t0)
        if newest:
            self.stats.last_lag_s = now - max(newest.values())

    def _update_gauges(self) -> None:
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            hw = self._consumer.highwater(tp)
            if hw is not None:
                self.metrics.set_offset_lag(
                    tp.topic, tp.partition, hw - self._consumer.position(tp)
                )
        self.metrics.set_size(self.store.size())

    def run(self) -> StateConsumerStats:
        """Consume until ``stop`` is set; returns the stats."""
        c = self.config
        self._consumer = KafkaConsumer(
            group_id=c.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.heartbeat_interval_ms,
            max_poll_records=c.max_poll_records,
            **self.kafka.client_kwargs(),
        )
        self._consumer.subscribe(c.topics, listener=_Listener(self))
        last_gauges = 0.0
        try:
            while not self.stop.is_set():
                polled = self._consumer.poll(timeout_ms=c.poll_timeout_ms)
                fresh = set(self.pending)
                if fresh:
                    self._resume()
                # A newly assigned partition's records from this poll came from Kafka's commit,
                # before the seek to the store's offset: they are fetched again after it.
                owned = self._consumer.assignment() - fresh
                polled = {tp: m for tp, m in polled.items() if tp in owned}
                if polled:
                    self._apply(polled)
                if time.monotonic() - last_gauges >= 1.0:
                    self._update_gauges()
                    last_gauges = time.monotonic()
        finally:
            self._consumer.close(autocommit=False)
        return self.stats
