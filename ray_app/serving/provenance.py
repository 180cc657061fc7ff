"""Provenance: reco events to Kafka through a bounded, non-blocking buffer; recent-answer traces."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from typing import Any

log = logging.getLogger("ray.serve")


class RecoLogger:
    """Queues reco events and sends them to Kafka from a background thread.

    ``log()`` never blocks: when the buffer is full (Kafka slow or down) the event is dropped and
    counted in ``dropped``. The producer is created lazily and re-created with back-off, so a
    broker that is down at start-up or goes away later never stops the service from answering.
    An empty ``bootstrap_servers`` disables sending (events are counted as ``disabled``).
    """

    def __init__(self, bootstrap_servers: str, topic: str, maxsize: int = 10_000) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.buffer: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=maxsize)
        self.sent = 0
        self.dropped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if bootstrap_servers:
            self._thread = threading.Thread(target=self._run, name="reco-logger", daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        return bool(self.bootstrap_servers)

    def log(self, event: dict[str, Any]) -> bool:
        """Enqueue ``event``; False (and counted) if dropped because the buffer is full."""
        if not self.enabled:
            return False
        try:
            self.buffer.put_nowait(event)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _producer(self) -> Any:
        from kafka import KafkaProducer

        return KafkaProducer(
            bootstrap_servers=self.bootstrap_servers.split(","),
            value_serializer=lambda v: json.dumps(v, separators=(",", ":")).encode(),
            linger_ms=20,
            acks=1,
            max_block_ms=2000,  # bounds how long send() may wait for metadata in this thread
            request_timeout_ms=5000,
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
                producer.send(self.topic, event).add_errback(self._on_error)
                self.sent += 1
            except Exception as exc:
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
        self.dropped += 1
        self.sent -= 1
        log.warning("reco logger: delivery failed: %r", exc)

    def stats(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "topic": self.topic,
            "queued": self.buffer.qsize(),
            "sent": self.sent,
            "dropped": self.dropped,
        }

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class TraceStore:
    """Bounded LRU of recent answers by request id (for ``GET /trace/{request_id}``)."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, request_id: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._items[request_id] = record
            self._items.move_to_end(request_id)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)

    def get(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(request_id)


def reco_event(
    request_id: str, user_id: str, answer: dict[str, Any], items: list[str], latency_ms: float
) -> dict[str, Any]:
    """The reco event (Kafka JSON and trace record) for one answer.

    It is a valid JSON-dialect ``reco_responses`` record (``server``, ``status``, ``items``,
    ``latency_ms``, ``ts``), so ``ray-app ingest --dialect json`` lands it in the snapshots;
    ``server`` carries ``<variant>@<model>:<version>``, which online evaluation reads.
    """
    return {
        "request_id": request_id,
        "user_id": user_id,
        "server": f"{answer.get('variant')}@{answer.get('model')}:{answer.get('version')}",
        "status": 200,
        "model_version": answer.get("version"),
        "variant": answer.get("variant"),
        "model": answer.get("model"),
        "version": answer.get("version"),
        "items": items,
        "fallback": bool(answer.get("fallback")),
        "reason": answer.get("reason"),
        "latency_ms": round(latency_ms, 3),
        "ts": time.time(),
    }
