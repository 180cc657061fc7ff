"""The snapshot consumer: Kafka records → parsed, validated Parquet batches, exactly once.

See :mod:`ray_app.snapshots.store` for the file protocol (on any pyarrow filesystem). This
module owns the consumer loop: per-partition buffers flushed by count, bytes or age; offsets
committed only after a batch's marker is durable; a rebalance flushes partitions before they are
revoked; SIGTERM/SIGINT (via ``stop``) flush everything and commit before exit.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import pyarrow as pa
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from ray_app.broker.settings import KafkaSettings
from ray_app.events.batch import ParsedBatch
from ray_app.events.line_dialect import parse_line_batch
from ray_app.ingest.config import IngestConfig
from ray_app.ingest.metrics import IngestMetrics
from ray_app.snapshots.protocol import BatchId
from ray_app.snapshots.store import SnapshotStore

log = logging.getLogger(__name__)

MAX_LAGGING_IDLE_CHECKS = 3
"""Idle periods tolerated while the broker still reports lag, before --until-idle stops."""


@dataclass
class _Buffer:
    values: list[bytes | None] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    nbytes: int = 0
    since: float = 0.0

    def add(self, value: bytes | None, offset: int) -> None:
        if not self.values:
            self.since = time.monotonic()
        self.values.append(value)
        self.offsets.append(offset)
        self.nbytes += len(value) if value else 0


@dataclass
class IngestStats:
    """What one consumer run did."""

    records: int = 0
    snapshot_rows: int = 0
    dead_letters: int = 0
    batches: int = 0
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    partitions: set[tuple[str, int]] = field(default_factory=set)
    first_record_at: float | None = None
    """``time.time()`` when the first record arrived (excludes the group join)."""
    last_flush_at: float | None = None
    """``time.time()`` when the last batch became durable (excludes the idle wait)."""


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: SnapshotConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.owner._on_revoked(revoked)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.owner._on_assigned(assigned)


class SnapshotConsumer:
    """One member of the ingest consumer group."""

    def __init__(
        self,
        kafka: KafkaSettings,
        config: IngestConfig,
        metrics: IngestMetrics | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.kafka = kafka
        self.config = config
        self.store = SnapshotStore.at(config.snapshot_dir)
        self.metrics = metrics or IngestMetrics()
        self.stop = stop or threading.Event()
        self.stats = IngestStats()
        self._buffers: dict[TopicPartition, _Buffer] = {}
        self._next: dict[TopicPartition, int] = {}
        self._consumer: KafkaConsumer | None = None
        self._dlq: KafkaProducer | None = None
        self._pending_assign: set[TopicPartition] = set()

    # ---- group membership ---------------------------------------------------------------
    def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        # Runs on kafka-python's IO thread, where blocking consumer calls are forbidden: make
        # the files durable (the markers are the source of truth for whoever gets these
        # partitions next) and commit asynchronously, best effort.
        log.info("partitions revoked: %s; flushing them first", revoked)
        self._flush([tp for tp in revoked if tp in self._buffers], commit="async")
        for tp in revoked:
            self._buffers.pop(tp, None)
            self._next.pop(tp, None)
        self._pending_assign.difference_update(revoked)

    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        # Blocking calls (committed/seek/commit) are not allowed here either; the main loop
        # resumes these partitions right after poll() returns, before it buffers any record.
        self._pending_assign.update(assigned)

    def _resume(self) -> None:
        """Resume newly assigned partitions from max(committed offset, commit markers)."""
        assert self._consumer is not None
        assigned, self._pending_assign = set(self._pending_assign), set()
        owned = {(tp.topic, tp.partition) for tp in assigned}
        removed = self.store.recover(owned)
        if removed:
            log.warning("removed %d files of unfinished batches: %s", len(removed), removed)
        on_disk = self.store.next_offsets()
        for tp in assigned:
            file_next = on_disk.get((tp.topic, tp.partition))
            committed = self._consumer.committed(tp)
            if file_next is not None and (committed is None or file_next > committed):
                # A crash came between marker and commit: the files are ahead of Kafka.
                log.info("%s: resuming from files at %d (committed %s)", tp, file_next, committed)
                self._consumer.seek(tp, file_next)
                self._consumer.commit({tp: OffsetAndMetadata(file_next, "", -1)})
                self._next[tp] = file_next
            elif committed is not None:
                self._next[tp] = committed
            else:
                self._next.pop(tp, None)
            self._buffers[tp] = _Buffer()
            self.stats.partitions.add((tp.topic, tp.partition))

    # ---- parsing and writing ------------------------------------------------------------
    def _parse(self, tp: TopicPartition, buf: _Buffer) -> ParsedBatch:
        if self.config.dialect == "line":
            return parse_line_batch(
                buf.values,
                topic=tp.topic,
                partitions=tp.partition,
                offsets=buf.offsets,
                rules=self.config.rules,
            )
        from ray_app.events.json_dialect import kind_for_topic, parse_json_batch

        kind = kind_for_topic(self.config.json_topic_prefix, tp.topic)
        return parse_json_batch(
            buf.values,
            kind=kind,
            topic=tp.topic,
            partitions=tp.partition,
            offsets=buf.offsets,
            rules=self.config.rules,
        )

    def _flush(self, tps: list[TopicPartition], commit: str = "sync") -> None:
        to_commit: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp in tps:
            buf = self._buffers.get(tp)
            if buf is None or not buf.values:
                continue
            t0 = time.perf_counter()
            parsed = self._parse(tp, buf)
            batch = BatchId(tp.topic, tp.partition, buf.offsets[0], buf.offsets[-1])
            files = self.store.write_batch(batch, parsed.good, parsed.dead)
            if self._dlq is not None and parsed.dead.num_rows:
                self._send_dead(parsed.dead)
            to_commit[tp] = OffsetAndMetadata(batch.last + 1, "", -1)
            secs = time.perf_counter() - t0
            self.metrics.observe_batch(
                tp.topic, tp.partition, parsed.good.num_rows, parsed.dead.num_rows, buf.nbytes, secs
            )
            self.stats.batches += 1
            self.stats.snapshot_rows += parsed.good.num_rows
            self.stats.dead_letters += parsed.dead.num_rows
            self.stats.files.extend(files)
            self._buffers[tp] = _Buffer()
        if not to_commit or self._consumer is None:
            return
        if commit == "sync":
            self._consumer.commit(to_commit)
            self.stats.last_flush_at = time.time()
        else:
            try:
                self._consumer.commit_async(to_commit)
            except Exception:  # the markers already make these batches safe to resume
                log.warning("async commit on revoke failed; resuming from markers", exc_info=True)

    def _send_dead(self, dead: pa.Table) -> None:
        assert self._dlq is not None and self.config.dlq_topic
        for row in dead.to_pylist():
            self._dlq.send(
                self.config.dlq_topic,
                value=row["raw"],
                headers=[
                    ("error", row["error"].encode()),
                    ("source", f"{row['topic']}/{row['partition']}/{row['offset']}".encode()),
                ],
            )

    def _due(self) -> list[TopicPartition]:
        now = time.monotonic()
        c = self.config
        return [
            tp
            for tp, b in self._buffers.items()
            if b.values
            and (
                len(b.values) >= c.max_batch_records
                or b.nbytes >= c.max_batch_bytes
                or now - b.since >= c.max_batch_delay_s
            )
        ]

    def _update_lag(self) -> None:
        assert self._consumer is not None
        for tp in self._consumer.assignment():
            hw = self._consumer.highwater(tp)
            if hw is not None:
                nxt = self._next.get(tp, 0)
                self.metrics.set_lag(tp.topic, tp.partition, hw - nxt)

    def _caught_up(self) -> bool:
        """True when every assigned partition's next offset has reached its end offset."""
        assert self._consumer is not None
        tps = list(self._consumer.assignment())
        if not tps:
            return True
        try:
            ends = self._consumer.end_offsets(tps)
        except Exception:  # broker unreachable: treat as idle rather than hang forever
            return True
        return all(self._consumer.position(tp) >= end for tp, end in ends.items())

    # ---- main loop ----------------------------------------------------------------------
    def run(self) -> IngestStats:
        """Consume until ``stop`` is set or the topic has been idle for ``until_idle_s``."""
        c = self.config
        kw = self.kafka.client_kwargs()
        self._consumer = KafkaConsumer(
            group_id=c.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.heartbeat_interval_ms,
            max_poll_interval_ms=c.max_poll_interval_ms,
            max_poll_records=c.max_poll_records,
            fetch_max_bytes=c.fetch_max_bytes,
            max_partition_fetch_bytes=min(c.fetch_max_bytes, 16 * 1024 * 1024),
            **kw,
        )
        if c.dlq_topic:
            self._dlq = KafkaProducer(linger_ms=50, **kw, **self.kafka.producer_options())
        self._consumer.subscribe(c.topics, listener=_Listener(self))
        start = last_record = time.monotonic()
        lagging_checks = 0
        try:
            while not self.stop.is_set():
                polled = self._consumer.poll(timeout_ms=200, max_records=c.max_poll_records)
                if self._pending_assign:
                    self._resume()
                for tp, msgs in polled.items():
                    if tp not in self._consumer.assignment():
                        continue  # revoked during this poll; the new owner re-reads them
                    buf = self._buffers.setdefault(tp, _Buffer())
                    expected = self._next.get(tp, -1)
                    for m in msgs:
                        if m.offset < expected:
                            continue  # re-delivery of an offset already on disk
                        buf.add(m.value, m.offset)
                        expected = m.offset + 1
                        self.stats.records += 1
                    self._next[tp] = expected
                    last_record = time.monotonic()
                    lagging_checks = 0
                    if self.stats.first_record_at is None:
                        self.stats.first_record_at = time.time()
                due = self._due()
                if due:
                    self._flush(due)
                    self._update_lag()
                if not self._consumer.assignment():
                    last_record = time.monotonic()  # idle time counts from the group join
                elif (
                    c.until_idle_s is not None and time.monotonic() - last_record >= c.until_idle_s
                ):
                    if self._caught_up():
                        log.info("no record for %.1fs and no lag; stopping", c.until_idle_s)
                        break
                    lagging_checks += 1
                    if lagging_checks > MAX_LAGGING_IDLE_CHECKS:
                        # Some brokers (Tansu) can report an end offset no fetch ever reaches;
                        # a bounded wait keeps --until-idle from hanging on such a partition.
                        log.warning(
                            "idle with lag reported for %d checks; stopping", lagging_checks
                        )
                        break
                    # A slow fetch is not an idle topic: keep going while records are waiting.
                    last_record = time.monotonic()
            self._flush(list(self._buffers))
            self._update_lag()
        finally:
            self.stats.seconds = time.monotonic() - start
            if self._dlq is not None:
                self._dlq.flush()
                self._dlq.close()
            self._consumer.close(autocommit=False)
        return self.stats
