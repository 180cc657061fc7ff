"""Raw kafka-python consumption vs full ingestion (parse, validate, write, commit).

Both are measured in one run on the same embedded broker and the same topic:

* raw: a KafkaConsumer assigned every partition, counting records (no parsing, no writing);
* full: :class:`SnapshotConsumer` with 1 consumer, then 2 consumer processes in one group
  (time from the first record to the last durable, committed batch; the group join and the
  idle wait at the end are excluded).

Usage: python benchmarks/ingest_throughput.py --events 1000000 --partitions 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import tempfile
import time
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from ray_app.broker.embedded import EmbeddedBroker, ensure_topics
from ray_app.broker.settings import KafkaSettings
from ray_app.ingest.config import IngestConfig
from ray_app.ingest.consumer import SnapshotConsumer


def produce(servers: str, topic: str, n: int, partitions: int) -> float:
    p = KafkaProducer(bootstrap_servers=servers, linger_ms=50, batch_size=1 << 20, acks=1)
    t0 = time.perf_counter()
    for i in range(n):
        if i % 10 == 9:
            line = f"2024-03-{1 + i % 28:02d}T10:{i % 60:02d}:{i % 60:02d}.{i % 1000:03d},{i % 6040},GET /rate/{i % 3900}={1 + i % 5}"
        else:
            line = f"2024-03-{1 + i % 28:02d}T10:{i % 60:02d}:{i % 60:02d},{i % 6040},GET /data/m/the+movie+{i % 3900}+1999/{i % 120}.mpg"
        p.send(topic, line.encode(), partition=i % partitions)
    p.flush()
    p.close()
    return time.perf_counter() - t0


def raw(servers: str, topic: str, n: int, partitions: int) -> float:
    c = KafkaConsumer(
        bootstrap_servers=servers,
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=16 << 20,
    )
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got, t0 = 0, None
    while got < n:
        for msgs in c.poll(timeout_ms=500).values():
            if t0 is None:
                t0 = time.perf_counter()
            got += len(msgs)
    c.close()
    assert t0 is not None
    return time.perf_counter() - t0


def _member(servers: str, cfg: IngestConfig, out: mp.Queue) -> None:  # type: ignore[type-arg]
    st = SnapshotConsumer(KafkaSettings(bootstrap_servers=servers), cfg).run()
    out.put((st.records, st.first_record_at, st.last_flush_at))


def full(servers: str, topic: str, consumers: int, snap: Path) -> tuple[int, float]:
    cfg = IngestConfig(
        topics=[topic],
        group_id=f"bench-{consumers}-{time.time_ns()}",
        snapshot_dir=snap,
        until_idle_s=4.0,
        max_batch_records=100_000,
        max_batch_delay_s=0.25,
    )
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    procs = [mp.Process(target=_member, args=(servers, cfg, q)) for _ in range(consumers)]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    records = sum(r[0] for r in results)
    start = min(r[1] for r in results if r[1])
    end = max(r[2] for r in results if r[2])
    return records, end - start


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--json-out", type=Path)
    a = ap.parse_args()
    with EmbeddedBroker() as b, tempfile.TemporaryDirectory() as tmp:
        topic = "bench-movielog"
        ensure_topics(b.bootstrap_servers, {topic: a.partitions})
        prod_s = produce(b.bootstrap_servers, topic, a.events, a.partitions)
        print(f"produced {a.events:,} events in {prod_s:.1f}s ({a.events / prod_s:,.0f}/s)")
        raw_s = raw(b.bootstrap_servers, topic, a.events, a.partitions)
        raw_rate = a.events / raw_s
        print(f"raw kafka-python consumption: {raw_rate:,.0f} records/s")
        res = {
            "events": a.events,
            "partitions": a.partitions,
            "raw_records_per_s": raw_rate,
            "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
            "date": time.strftime("%Y-%m-%d"),
        }
        for n in (1, 2):
            recs, secs = full(b.bootstrap_servers, topic, n, Path(tmp) / f"snap{n}")
            assert recs == a.events, f"{n} consumers ingested {recs} of {a.events}"
            rate = recs / secs
            res[f"full_{n}_records_per_s"] = rate
            print(
                f"full ingestion, {n} consumer(s): {rate:,.0f} records/s = {rate / raw_rate:.2f} x raw"
            )
    if a.json_out:
        a.json_out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
