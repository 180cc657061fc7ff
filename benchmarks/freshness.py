"""Freshness benchmark: how long from producing a watch event to the first answer that reflects it.

Everything real on one machine: the embedded Kafka broker, a state consumer actor, the state
store (the embedded Ray actor, or Redis with ``--store redis --redis-url …``) and the Serve app
over HTTP. While background watch events go to ``movielog`` at ``--event-rate`` per second and
``--rate`` requests per second hit ``/recommend`` (open loop, distinct users), a sampler now and
then takes a user's current top movie, produces a watch event for it and polls that user every
``--poll-ms`` until the movie is gone. Freshness = that moment minus the produce call's start.

    python benchmarks/freshness.py --event-rate 1000 --rate 100 --duration 60
    python benchmarks/freshness.py --event-rate 100 --rate 20 --duration 20   # a quick look

Reports p50/p95/p99 freshness, the request latencies, and the rates actually achieved.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("RAY_APP_REGISTRY_HMAC_KEY", "bench-only-registry-key")
os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")


def build_registry(root: Path, model: str, users: int, items: int, seed: int = 0) -> None:
    """Zipf-ish synthetic interactions with line-dialect ids (numeric users, ``m<i>`` movies)."""
    import pandas as pd

    from ray_app.models.base import Interactions
    from ray_app.models.catalog import build_model
    from ray_app.models.popularity import Popularity
    from ray_app.registry.store import Registry

    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, items + 1) ** 0.8
    p /= p.sum()
    rows = [
        (str(u), f"m{i}")
        for u in range(users)
        for i in rng.choice(items, size=int(rng.integers(5, 40)), replace=False, p=p)
    ]
    inter = Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]))
    reg = Registry(root)
    reg.register(build_model(model).fit(inter))
    reg.register(Popularity().fit(inter))


def produce_background(
    servers: str, topic: str, rate: float, stop: threading.Event, users: int, items: int
) -> dict[str, float]:
    """Watch events at ``rate``/s until ``stop``; returns what was achieved."""
    from kafka import KafkaProducer

    from ray_app.events.line_dialect import format_line
    from ray_app.events.model import WatchEvent

    producer = KafkaProducer(bootstrap_servers=servers, linger_ms=5)
    rng = random.Random(1)
    sent, t0 = 0, time.perf_counter()
    while not stop.is_set():
        due = int((time.perf_counter() - t0) * rate)
        while sent < due:
            e = WatchEvent(
                dt.datetime.now(dt.UTC),
                str(users + rng.randrange(users)),  # other users than the sampled ones
                f"m{rng.randrange(items)}",
                rng.randrange(120),
            )
            producer.send(topic, format_line(e).encode())
            sent += 1
        time.sleep(0.002)
    producer.flush()
    producer.close()
    wall = time.perf_counter() - t0
    return {"events_sent": sent, "event_rate": sent / wall}


async def request_load(url: str, rate: float, stop: asyncio.Event, users: int) -> dict[str, Any]:
    """Open-loop ``rate`` req/s to distinct users until ``stop``; latency from scheduled time."""
    import aiohttp

    lat: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(
        url, connector=aiohttp.TCPConnector(limit=256), timeout=aiohttp.ClientTimeout(total=10)
    ) as client:

        async def one(i: int, t_sched: float) -> None:
            nonlocal errors
            try:
                async with client.get(f"/recommend/{i % users}") as r:
                    await r.text()
                    ok = r.status == 200
            except Exception:
                ok = False
            if ok:
                lat.append((time.perf_counter() - t_sched) * 1000)
            else:
                errors += 1

        tasks = []
        t0 = time.perf_counter()
        i = 0
        while not stop.is_set():
            t_sched = t0 + i / rate
            delay = t_sched - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, t_sched)))
            i += 1
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    a = np.asarray(lat) if lat else np.asarray([float("nan")])
    return {
        "request_rate": len(lat) / wall,
        "request_errors": errors,
        "request_p50_ms": float(np.percentile(a, 50)),
        "request_p99_ms": float(np.percentile(a, 99)),
    }


async def sample_freshness(
    url: str, servers: str, topic: str, args: argparse.Namespace, stop: asyncio.Event
) -> list[float]:
    """Produce a watch of a user's top movie, then poll until it is gone; seconds per sample."""
    import aiohttp
    from kafka import KafkaProducer

    from ray_app.events.line_dialect import format_line
    from ray_app.events.model import WatchEvent

    producer = KafkaProducer(bootstrap_servers=servers, linger_ms=0)
    out: list[float] = []
    rng = random.Random(2)
    async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=10)) as client:

        async def top(user: str) -> list[str]:
            async with client.get(f"/recommend/{user}", params={"k": "20"}) as r:
                return (await r.text()).split(",")

        while not stop.is_set():
            user = str(rng.randrange(args.users))
            items = await top(user)
            movie = items[0]
            started = time.perf_counter()
            line = format_line(WatchEvent(dt.datetime.now(dt.UTC), user, movie, 0))
            producer.send(topic, line.encode())
            producer.flush()
            deadline = started + args.give_up_s
            while time.perf_counter() < deadline:
                if movie not in await top(user):
                    out.append(time.perf_counter() - started)
                    break
                await asyncio.sleep(args.poll_ms / 1000)
            else:
                out.append(float("inf"))
            await asyncio.sleep(args.sample_every_s)
    producer.close()
    return out


async def measure(url: str, servers: str, topic: str, args: argparse.Namespace) -> dict[str, Any]:
    stop_bg = threading.Event()
    background: dict[str, float] = {}

    def run_producer() -> None:
        background.update(
            produce_background(servers, topic, args.event_rate, stop_bg, args.users, args.items)
        )

    thread = threading.Thread(target=run_producer, daemon=True)
    thread.start()
    stop = asyncio.Event()
    load = asyncio.create_task(request_load(url, args.rate, stop, args.users))
    sampler = asyncio.create_task(sample_freshness(url, servers, topic, args, stop))
    await asyncio.sleep(args.duration)
    stop.set()
    samples = await sampler
    req = await load
    stop_bg.set()
    thread.join()
    s = np.asarray(samples)
    finite = s[np.isfinite(s)]
    q = np.percentile(finite, [50, 95, 99]) if len(finite) else [float("nan")] * 3
    return {
        "samples": len(s),
        "not_reflected": int((~np.isfinite(s)).sum()),
        "fresh_p50_s": float(q[0]),
        "fresh_p95_s": float(q[1]),
        "fresh_p99_s": float(q[2]),
        **background,
        **req,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--event-rate", type=float, default=1000, help="Background watch events/s.")
    ap.add_argument("--rate", type=float, default=100, help="Background requests/s.")
    ap.add_argument("--duration", type=float, default=60, help="Measured phase (s).")
    ap.add_argument("--model", default="itemknn", choices=["itemknn", "ease"])
    ap.add_argument("--users", type=int, default=2000, help="Users in the trained model.")
    ap.add_argument("--items", type=int, default=1500)
    ap.add_argument("--partitions", type=int, default=2, help="Partitions of the topic.")
    ap.add_argument("--consumers", type=int, default=1, help="State consumer actors.")
    ap.add_argument("--store", choices=["actor", "redis"], default="actor")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--poll-ms", type=float, default=20, help="Sampler's polling period.")
    ap.add_argument("--sample-every-s", type=float, default=0.2, help="Pause between samples.")
    ap.add_argument("--give-up-s", type=float, default=30, help="A sample not reflected by then.")
    ap.add_argument("--num-cpus", type=int, default=None, help="Ray's CPUs (default: all).")
    ap.add_argument("--json", type=Path, help="Also write the results here.")
    args = ap.parse_args()

    import ray
    from ray import serve

    from ray_app.broker.embedded import EmbeddedBroker, ensure_topics, free_port
    from ray_app.broker.settings import KafkaSettings
    from ray_app.serving.config import ServeArgs, VariantSpec
    from ray_app.serving.run import start_serving
    from ray_app.state.config import StateConfig, StateConsumerConfig
    from ray_app.state.group import StateConsumerGroup
    from ray_app.state.open_store import open_store

    topic = "movielog"
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        servers = broker.bootstrap_servers
        ensure_topics(servers, {topic: args.partitions})
        build_registry(Path(tmp) / "registry", args.model, args.users, args.items)
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        state = StateConfig(
            kind=args.store,
            url=args.redis_url,
            key_prefix=f"bench-{uuid.uuid4().hex[:8]}:",
            detached=False,
        )
        store = open_store(state)
        group = StateConsumerGroup(
            KafkaSettings(bootstrap_servers=servers),
            StateConsumerConfig(topics=[topic], state=state),
            n=args.consumers,
        ).start()
        port = free_port()
        start_serving(
            ServeArgs(
                registry=str(Path(tmp) / "registry"),
                variants=[VariantSpec(name="A", model=args.model)],
                state=state,
                rate_limit_per_min=10_000_000,
            ),
            "127.0.0.1",
            port,
        )
        try:
            while not all(s.partitions for s in group.stats()):
                time.sleep(0.2)
            result = asyncio.run(measure(f"http://127.0.0.1:{port}", servers, topic, args))
            result["state_users"] = store.size().users
            result["consumer_last_lag_s"] = max((s.last_lag_s or 0.0) for s in group.stats())
        finally:
            serve.shutdown()
            group.stop()
            store.clear()
            ray.shutdown()
    result.update(
        {
            "target_event_rate": args.event_rate,
            "target_request_rate": args.rate,
            "duration_s": args.duration,
            "model": args.model,
            "store": args.store,
        }
    )
    width = max(len(k) for k in result)
    for k, v in result.items():
        print(f"{k:<{width}}  {v:.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
