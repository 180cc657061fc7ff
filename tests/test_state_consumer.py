"""The state consumer against the real embedded broker: events reach the store, offsets are
committed only after the store write, and a restart neither loses nor double-counts events."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from helpers import wait_until
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from ray_app.broker.embedded import ensure_topics
from ray_app.broker.settings import KafkaSettings
from ray_app.events.json_dialect import format_json, topic_for
from ray_app.events.line_dialect import format_line
from ray_app.events.model import Event, RateEvent, RecoEvent, WatchEvent
from ray_app.state.config import StateConfig, StateConsumerConfig
from ray_app.state.consumer import StateConsumer, StateConsumerStats
from ray_app.state.open_store import open_store
from ray_app.state.store import StateStore

pytestmark = pytest.mark.integration

T0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)


@pytest.fixture()
def store(ray_session: None) -> Iterator[StateStore]:
    s = open_store(StateConfig(actor_name=f"t{uuid.uuid4().hex[:10]}", detached=False))
    yield s
    s.clear()


class Running:
    """A consumer on a thread, stopped (and joined) by :meth:`stop`."""

    def __init__(self, consumer: StateConsumer) -> None:
        self.consumer = consumer
        self.result: StateConsumerStats | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.result = self.consumer.run()

    def stop(self) -> StateConsumerStats:
        self.consumer.stop.set()
        self.thread.join(timeout=60)
        assert self.result is not None
        return self.result


def _produce(broker: str, topic: str, values: list[bytes]) -> None:
    p = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
    for v in values:
        p.send(topic, v)
    p.flush()
    p.close()


def _committed(broker: str, group: str, topic: str) -> int | None:
    c = KafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
    try:
        got: int | None = c.committed(TopicPartition(topic, 0))
        return got
    finally:
        c.close()


def _line(e: Event) -> bytes:
    return format_line(e).encode()


def test_line_events_reach_the_store_and_a_restart_does_not_double_count(
    broker: str, store: StateStore
) -> None:
    topic = f"movielog-{os.getpid()}-{time.monotonic_ns()}"
    ensure_topics(broker, {topic: 1})
    first = [
        _line(WatchEvent(T0, "7", "the+green+mile+1999", 0)),
        _line(WatchEvent(T0 + dt.timedelta(seconds=60), "7", "the+green+mile+1999", 1)),
        b"not an event at all",
        _line(RecoEvent(T0, "7", "srv", 200, ["a", "b"], 10.0)),
        _line(RateEvent(T0 + dt.timedelta(seconds=90), "7", "heat+1995", 4)),
        _line(WatchEvent(T0, "8", "the+green+mile+1999", 0)),
    ]
    _produce(broker, topic, first)
    cfg = StateConsumerConfig(topics=[topic], group_id=f"state-{topic}", poll_timeout_ms=50)
    settings = KafkaSettings(bootstrap_servers=broker)
    run = Running(StateConsumer(settings, cfg, store=store))
    try:
        wait_until(lambda: store.offsets().get((topic, 0)) == 6, 60, what="offsets 0..5 applied")
        wait_until(lambda: _committed(broker, cfg.group_id, topic) == 6, 30, what="commit")
    finally:
        stats = run.stop()
    assert (stats.records, stats.applied, stats.ignored) == (6, 4, 2)
    h7, h8 = store.histories(["7", "8"])
    assert [(h.item_id, h.rating) for h in h7] == [
        ("heat+1995", 4.0),
        ("the+green+mile+1999", None),
    ]
    assert [h.item_id for h in h8] == ["the+green+mile+1999"]
    trend = dict(store.trending(5, now=T0.timestamp()))
    assert trend["the+green+mile+1999"] == pytest.approx(2.0)  # two viewers, not three events

    # Simulate a crash between the store write and the commit: rewind Kafka's offset to 2.
    c = KafkaConsumer(bootstrap_servers=broker, group_id=cfg.group_id, enable_auto_commit=False)
    c.commit({TopicPartition(topic, 0): OffsetAndMetadata(2, "", -1)})
    c.close()
    _produce(broker, topic, [_line(WatchEvent(T0, "9", "the+green+mile+1999", 0))])
    run = Running(StateConsumer(settings, cfg, store=store))
    try:
        wait_until(lambda: store.offsets().get((topic, 0)) == 7, 60, what="offset 6 applied")
    finally:
        stats = run.stop()
    assert stats.applied == 1  # resumed from the store's offset 6, not Kafka's 2
    trend = dict(store.trending(5, now=T0.timestamp()))
    assert trend["the+green+mile+1999"] == pytest.approx(3.0)
    assert store.size().users == 3


def test_a_lost_store_is_rebuilt_from_the_topic(broker: str, store: StateStore) -> None:
    topic = f"movielog-{os.getpid()}-{time.monotonic_ns()}"
    ensure_topics(broker, {topic: 1})
    _produce(broker, topic, [_line(WatchEvent(T0, str(u), "m1", 0)) for u in range(5)])
    cfg = StateConsumerConfig(topics=[topic], group_id=f"state-{topic}", poll_timeout_ms=50)
    settings = KafkaSettings(bootstrap_servers=broker)
    run = Running(StateConsumer(settings, cfg, store=store))
    try:
        wait_until(lambda: _committed(broker, cfg.group_id, topic) == 5, 60, what="commit")
    finally:
        run.stop()
    store.clear()  # e.g. the embedded actor's node went away
    run = Running(StateConsumer(settings, cfg, store=store))
    try:
        wait_until(lambda: store.size().users == 5, 60, what="state rebuilt")
    finally:
        run.stop()
    assert dict(store.trending(1, now=T0.timestamp())) == {"m1": pytest.approx(5.0)}


def test_json_topics_feed_the_same_state(broker: str, store: StateStore) -> None:
    prefix = f"js-{os.getpid()}-{time.monotonic_ns()}"
    watch, rate = topic_for(prefix, "watch"), topic_for(prefix, "rate")
    ensure_topics(broker, {watch: 1, rate: 1})
    _produce(broker, watch, [format_json(WatchEvent(T0, "3", "42", 5))])
    _produce(broker, rate, [format_json(RateEvent(T0 + dt.timedelta(seconds=1), "3", "43", 2))])
    cfg = StateConsumerConfig(
        topics=[watch, rate],
        dialect="json",
        json_topic_prefix=prefix,
        group_id=f"state-{prefix}",
        poll_timeout_ms=50,
    )
    run = Running(StateConsumer(KafkaSettings(bootstrap_servers=broker), cfg, store=store))
    try:
        wait_until(lambda: len(store.histories(["3"])[0]) == 2, 60, what="both events applied")
    finally:
        run.stop()
    (h,) = store.histories(["3"])
    assert [(x.item_id, x.rating) for x in h] == [("43", 2.0), ("42", None)]
