"""Provenance: reco events to Kafka through a bounded, non-blocking buffer; recent-answer traces.

The events themselves are built by :func:`ray_app.events.reco.served_reco_event` and encoded by
:func:`ray_app.events.json_dialect.format_json`, so ``ray-app ingest --dialect json`` lands them
in the snapshots and online evaluation reads them like any other reco event.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import OrderedDict
from typing import Any

from kafka.errors import BrokerResponseError

from ray_app.events.json_dialect import format_json
from ray_app.events.model import RecoEvent
from ray_app.serving.answer import Answer

log = logging.getLogger("ray.serve")
_REFUSAL_LOG_INTERVAL_S = 60.0


class RecoLogger:
    """Queues reco events and sends them, JSON-dialect encoded, to Kafka from a background thread.

    ``log()`` never blocks: when the buffer is full (Kafka slow or down) the event is dropped and
    counted in ``dropped``. The producer is created lazily and re-created with back-off, so a
    broker that is down at start-up or goes away later never stops the service from answering.
    A record the broker refuses (e.g. ``InvalidRecordError`` from a broker that validates the
    topic's schema) is counted in ``dropped`` and ``refused`` and logged at most once a minute;
    sending goes on. An empty ``bootstrap_servers`` disables sending.
    """

    def __init__(self, bootstrap_servers: str, topic: str, maxsize: int = 10_000) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.buffer: queue.Queue[RecoEvent] = queue.Queue(maxsize=maxsize)
        self.sent = 0
        self.dropped = 0
        self.refused = 0
        # Delivery callbacks run on the producer's I/O thread, the rest on ours.
        self._lock = threading.Lock()
        self._refusal_logged_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if bootstrap_servers:
            self._thread = threading.Thread(target=self._run, name="reco-logger", daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        """Whether events are sent at all (bootstrap servers configured)."""
        return bool(self.bootstrap_servers)

    def log(self, event: RecoEvent) -> bool:
        """Enqueue ``event``; False (and counted) if dropped because the buffer is full."""
        if not self.enabled:
            return False
        try:
            self.buffer.put_nowait(event)
            return True
        except queue.Full:
            with self._lock:
                self.dropped += 1
            return False

    def _producer(self) -> Any:
        from kafka import KafkaProducer

        # acks=all: online evaluation counts these events, so one acknowledged by a leader that
        # then dies must not vanish; the wait for the replicas is paid on this thread, never by
        # a request. No idempotence: on a broker that validates schemas (Tansu 0.6) one refused
        # record makes an idempotent producer's every later record on that partition refused
        # too, and a refusal must never stop the events. The price: a retry after a lost
        # acknowledgement may write an event twice (same request_id, so it can be told apart).
        return KafkaProducer(
            bootstrap_servers=self.bootstrap_servers.split(","),
            linger_ms=20,
            acks="all",
            enable_idempotence=False,
            max_block_ms=2000,  # bounds how long send() may wait for metadata in this thread
            request_timeout_ms=5000,
            delivery_timeout_ms=30_000,  # a broker down longer: the record is counted as dropped
        )

    def _run(self) -> None:
        producer = None
        backoff = 0.5
        while not self._stop.is_set():
            if producer is None:
                try:
                    producer = self._producer()
                    backoff = 0.5
                except Exception as exc:
                    log.warning("reco logger: Kafka unavailable (%r); retry in %.1fs", exc, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
            try:
                event = self.buffer.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                value = format_json(event)
            except (TypeError, ValueError) as exc:  # not encodable: retrying cannot help
                with self._lock:
                    self.dropped += 1
                log.warning("reco logger: cannot encode %r: %s", event, exc)
                continue
            try:
                with self._lock:
                    self.sent += 1
                producer.send(self.topic, value).add_errback(self._on_error)
            except Exception as exc:
                with self._lock:
                    self.sent -= 1
                    self.dropped += 1
                log.warning("reco logger: send failed (%r); reconnecting", exc)
                try:
                    producer.close(timeout=1)
                except Exception:
                    pass
                producer = None
        if producer is not None:
            try:
                producer.flush(timeout=2)
                producer.close(timeout=2)
            except Exception:
                pass

    def _on_error(self, exc: BaseException) -> None:
        """A record was not delivered: counted, never retried (its answer went out already)."""
        refused = isinstance(exc, BrokerResponseError) and not exc.retriable
        now = time.monotonic()
        with self._lock:
            self.sent -= 1
            self.dropped += 1
            self.refused += int(refused)
            count = self.refused
            # A refusal repeats for every record of a bad batch and of every batch after it:
            # saying so once a minute is enough.
            last = self._refusal_logged_at
            quiet = refused and last is not None and now - last < _REFUSAL_LOG_INTERVAL_S
            if refused and not quiet:
                self._refusal_logged_at = now
        if not refused:
            log.warning("reco logger: delivery failed: %r", exc)
        elif not quiet:
            log.warning(
                "reco logger: the broker refused a record for %s (%r); %d refused so far, "
                "the service keeps answering",
                self.topic,
                exc,
                count,
            )

    def stats(self) -> dict[str, Any]:
        """Counters for ``/healthz``."""
        with self._lock:
            sent, dropped, refused = self.sent, self.dropped, self.refused
        return {
            "enabled": self.enabled,
            "topic": self.topic,
            "queued": self.buffer.qsize(),
            "sent": sent,
            "dropped": dropped,
            "refused": refused,
        }

    def close(self) -> None:
        """Stop the sender thread after flushing what the producer holds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class TraceStore:
    """Bounded LRU of recent answers by request id (for ``GET /trace/{request_id}``)."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, tuple[Answer, RecoEvent]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, answer: Answer, event: RecoEvent) -> None:
        """Keep ``answer`` and its reco event under the answer's ``request_id``."""
        if answer.request_id is None:
            raise ValueError("an answer needs a request_id to be traced")
        with self._lock:
            self._items[answer.request_id] = (answer, event)
            self._items.move_to_end(answer.request_id)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def get(self, request_id: str) -> dict[str, Any] | None:
        """The answer's fields plus the reco event's (``server``, ``status``, ``ts``…), or None.

        Built on read, not on put: traces are rare and answers are not.
        """
        with self._lock:
            found = self._items.get(request_id)
        if found is None:
            return None
        answer, event = found
        record = dataclasses.asdict(event)
        record["ts"] = event.ts.isoformat()
        return {**record, **answer.model_dump(mode="json")}
