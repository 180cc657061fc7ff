"""Ingest against the real embedded broker: both dialects agree; consumer actors on Ray, each
with its own /metrics port."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from helpers import wait_until
from kafka import KafkaProducer

from ray_app.broker.embedded import ensure_topics, free_port
from ray_app.broker.settings import KafkaSettings
from ray_app.events.json_dialect import format_json, topic_for
from ray_app.events.line_dialect import format_line
from ray_app.events.model import Event, RateEvent, RecoEvent, WatchEvent
from ray_app.ingest.config import IngestConfig
from ray_app.ingest.consumer import IngestStats, SnapshotConsumer
from ray_app.ingest.run import run_ingest

pytestmark = pytest.mark.integration


def _events(n: int) -> list[Event]:
    t0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    out: list[Event] = []
    for i in range(n):
        ts = t0 + dt.timedelta(seconds=i, microseconds=i * 7 % 1_000_000)
        user = str(i % 13)
        if i % 5 == 4:
            out.append(RecoEvent(ts, user, "srv-1", 200, [f"m{j}" for j in range(i % 4 + 1)], 12.5))
        elif i % 3 == 0:
            out.append(RateEvent(ts, user, f"the+movie+{i % 7}", 1 + i % 5))
        else:
            out.append(WatchEvent(ts, user, str(100 + i % 9), i % 30))
    return out


def _kind(e: Event) -> str:
    return {WatchEvent: "watch", RateEvent: "rate", RecoEvent: "reco_responses"}[type(e)]


def _content(snapshot_dir: Path) -> list[tuple[object, ...]]:
    cols = [
        "kind",
        "user_id",
        "movie_id",
        "ts",
        "minute",
        "rating",
        "status",
        "latency_ms",
        "items",
    ]
    t = pads.dataset(snapshot_dir / "events", format="parquet", partitioning="hive").to_table(
        columns=cols
    )
    rows = [tuple(str(r[c]) for c in cols) for r in t.to_pylist()]
    return sorted(rows)


def test_line_and_json_dialects_produce_the_same_snapshot_rows(broker: str, tmp_path: Path) -> None:
    events = _events(600)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    line_topic, prefix = f"lines-{tag}", f"js-{tag}"
    topics = {line_topic: 1} | {
        topic_for(prefix, k): 1 for k in ("watch", "rate", "reco_responses")
    }
    ensure_topics(broker, topics)
    p = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
    for e in events:
        p.send(line_topic, format_line(e).encode())
        p.send(topic_for(prefix, _kind(e)), format_json(e))
    p.send(line_topic, b"2024-03-01T00:00:00,1,GET /rate/9=11")  # out of range: dead letter
    p.flush()
    settings = KafkaSettings(bootstrap_servers=broker)
    line_cfg = IngestConfig(
        topics=[line_topic], group_id=f"l-{tag}", snapshot_dir=tmp_path / "line", until_idle_s=3
    )
    json_cfg = IngestConfig(
        topics=[topic_for(prefix, k) for k in ("watch", "rate", "reco_responses")],
        dialect="json",
        json_topic_prefix=prefix,
        group_id=f"j-{tag}",
        snapshot_dir=tmp_path / "json",
        until_idle_s=3,
    )
    ls = SnapshotConsumer(settings, line_cfg).run()
    js = SnapshotConsumer(settings, json_cfg).run()
    assert ls.snapshot_rows == js.snapshot_rows == len(events)
    assert ls.dead_letters == 1 and js.dead_letters == 0
    assert _content(tmp_path / "line") == _content(tmp_path / "json")
    dead = pq.read_table(next((tmp_path / "line" / "dead_letter").rglob("*.parquet")))
    assert "rating 11" in dead["error"][0].as_py()


def test_consumer_actors_share_partitions_and_survive_a_restart(
    broker: str, ray_session: None, tmp_path: Path
) -> None:
    import ray

    from ray_app.ingest.scale import ConsumerActor

    topic = f"scale-{os.getpid()}-{time.monotonic_ns()}"
    ensure_topics(broker, {topic: 2})
    p = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
    futures = [
        p.send(
            topic,
            f"2024-03-01T00:00:{i % 60:02d},{i % 50},GET /data/m/{i % 40}/1.mpg".encode(),
            partition=i % 2,
        )
        for i in range(20_000)
    ]
    p.flush()
    produced = {(f.get().partition, f.get().offset) for f in futures}
    cfg = IngestConfig(
        topics=[topic],
        group_id=f"g-{topic}",
        snapshot_dir=tmp_path,
        until_idle_s=6,
        max_batch_records=500,
        max_poll_records=250,
        max_batch_delay_s=0.3,
    )
    settings = KafkaSettings(bootstrap_servers=broker)
    actors = [
        ConsumerActor.options(max_concurrency=2).remote(settings, cfg, str(i)) for i in range(2)
    ]  # type: ignore[attr-defined]
    runs = [a.run.remote() for a in actors]
    deadline = time.monotonic() + 60
    owned: list[list[tuple[str, int]]] = [[], []]
    while time.monotonic() < deadline and not all(owned):
        owned = ray.get([a.partitions.remote() for a in actors])
        time.sleep(0.5)
    assert sorted(x for o in owned for x in o) == [(topic, 0), (topic, 1)], owned
    ray.kill(actors[0], no_restart=False)  # Ray restarts it; it rejoins and resumes from markers
    ray.get(runs, timeout=300)

    seen: Counter[tuple[int, int]] = Counter()
    for f in (tmp_path / "events").rglob("*.parquet"):
        t = pq.read_table(f, columns=["partition", "offset"])
        seen.update(zip(t["partition"].to_pylist(), t["offset"].to_pylist(), strict=True))
    assert not [k for k, c in seen.items() if c > 1], "no offset written twice"
    assert set(seen) == produced, "no offset lost"


def test_quiet_topic_lands_within_the_delay_and_dead_letters_reach_the_dlq(
    broker: str, tmp_path: Path
) -> None:
    import threading

    from kafka import KafkaConsumer, TopicPartition

    from ray_app.snapshots.store import committed_batches

    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    topic, dlq = f"quiet-{tag}", f"dlq-{tag}"
    ensure_topics(broker, {topic: 1, dlq: 1})
    p = KafkaProducer(bootstrap_servers=broker)
    p.send(topic, b"2024-03-01T00:00:00,1,GET /data/m/5/1.mpg")
    p.send(topic, b"2024-03-01T00:00:01,1,GET /nope")
    p.send(topic, b"2024-03-01T00:00:02,1,GET /rate/5=4")
    p.flush()
    cfg = IngestConfig(
        topics=[topic],
        group_id=f"q-{tag}",
        snapshot_dir=tmp_path,
        dlq_topic=dlq,
        max_batch_records=10_000,
        max_batch_delay_s=1.0,
    )
    stop = threading.Event()
    consumer = SnapshotConsumer(KafkaSettings(bootstrap_servers=broker), cfg, stop=stop)
    t = threading.Thread(target=consumer.run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not committed_batches(tmp_path):
            time.sleep(0.2)
        assert committed_batches(tmp_path), "3 records far below max_batch_records still flushed"
        assert t.is_alive(), "flushed by the delay, not by the consumer stopping"
    finally:
        stop.set()
        t.join(timeout=30)
    assert consumer.stats.snapshot_rows == 2 and consumer.stats.dead_letters == 1
    c = KafkaConsumer(bootstrap_servers=broker, consumer_timeout_ms=10_000)
    c.assign([TopicPartition(dlq, 0)])
    c.seek_to_beginning()
    msg = next(iter(c))
    c.close()
    assert msg.value == b"2024-03-01T00:00:01,1,GET /nope"
    headers = dict(msg.headers)
    assert b"/nope" in headers["error"] and headers["source"] == f"{topic}/0/1".encode()


def _consecutive_free_ports(n: int) -> int:
    for _ in range(50):
        base = free_port()
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                s.bind(("0.0.0.0", base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no {n} consecutive free ports")


def test_each_consumer_actor_serves_metrics_on_its_own_port(
    broker: str, ray_session: None, tmp_path: Path
) -> None:
    topic = f"metrics-{os.getpid()}-{time.monotonic_ns()}"
    ensure_topics(broker, {topic: 2})
    p = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
    for i in range(400):
        p.send(topic, f"2024-03-01T00:00:{i % 60:02d},{i},GET /data/m/7/1.mpg".encode(),
               partition=i % 2)  # fmt: skip
    p.flush()
    cfg = IngestConfig(
        topics=[topic], group_id=f"m-{topic}", snapshot_dir=tmp_path, until_idle_s=8,
        max_batch_delay_s=0.3,
    )  # fmt: skip
    base = _consecutive_free_ports(2)
    done: list[IngestStats] = []
    t = threading.Thread(
        target=lambda: done.append(
            run_ingest(KafkaSettings(bootstrap_servers=broker), cfg, consumers=2, metrics_port=base)
        ),
        daemon=True,
    )
    t.start()
    try:
        for port in (base, base + 1):
            body = wait_until(
                lambda port=port: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text,
                timeout=120,
                what=f"/metrics on {port}",
            )
            assert "ray_app_ingest_records_total" in body
    finally:
        t.join(timeout=180)
    assert done and done[0].snapshot_rows == 400
