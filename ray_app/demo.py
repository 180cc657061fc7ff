"""``make demo``: every stage of the loop on embedded defaults, with figures at each step."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.rule import Rule


@dataclass
class DemoOptions:
    once: bool = False
    users: int | None = None
    port: int = 8000
    workdir: Path = Path("data/demo")
    bootstrap_servers: str = ""
    topic: str = "movielog"


def _wait_http(url: str, timeout_s: float = 120.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=10)
            if r.status_code == 200:
                return r
            last = RuntimeError(f"{url} answered {r.status_code}: {r.text[:200]}")
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s: {last}")


def run_demo(opts: DemoOptions, console: Console) -> int:
    """Run the loop; returns the process exit code."""
    from ray import serve

    from ray_app.broker.embedded import kafka_endpoint
    from ray_app.broker.settings import KafkaSettings
    from ray_app.cli import do_ingest, do_replay, print_train_result, start_serving
    from ray_app.data.movielens import load
    from ray_app.ingest.config import IngestConfig
    from ray_app.runtime import init_ray
    from ray_app.serving.config import ServeArgs
    from ray_app.training.job import TrainConfig, run_training

    snapshots = opts.workdir / "snapshots"
    registry = opts.workdir / "registry"
    # A fresh broker has fresh offsets, so snapshots from an earlier run would collide by name.
    if snapshots.exists() and not opts.bootstrap_servers:
        shutil.rmtree(snapshots)
    settings = KafkaSettings(bootstrap_servers=opts.bootstrap_servers)
    with kafka_endpoint(settings.bootstrap_servers) as servers:
        settings = settings.model_copy(update={"bootstrap_servers": servers})
        how = "given" if opts.bootstrap_servers else "embedded Tansu"
        console.print(Rule("1. broker"))
        console.print(f"Kafka ({how}) at [bold]{servers}[/bold]")

        console.print(Rule("2. data"))
        ml = load("ml-100k")
        console.print(
            f"MovieLens-100K: {len(ml.ratings):,} ratings, {ml.ratings.user_id.nunique():,} users, "
            f"{len(ml.movies):,} movies, {len(ml.users):,} user profiles (source: {ml.source})"
        )

        console.print(Rule("3. replay → Kafka"))
        stats = do_replay(servers, settings, topic=opts.topic, users=opts.users)
        console.print(
            f"produced {stats.events:,} line-dialect events ({stats.watch:,} watch, "
            f"{stats.rate:,} rate) for {stats.users:,} users in {stats.seconds:.1f}s "
            f"({stats.events / max(stats.seconds, 1e-9):,.0f} events/s)"
        )

        console.print(Rule("4. ingest → Parquet"))
        icfg = IngestConfig(
            topics=[opts.topic], snapshot_dir=snapshots, until_idle_s=3.0, max_batch_delay_s=2.0
        )
        ist = do_ingest(settings, icfg)
        console.print(
            f"consumed {ist.records:,} records → {ist.snapshot_rows:,} snapshot rows, "
            f"{ist.dead_letters:,} dead letters in {ist.batches} batches, {len(ist.files)} files "
            f"({ist.records / max(ist.seconds, 1e-9):,.0f} records/s incl. group join)"
        )
        for f in ist.files[:3]:
            console.print(f"  {snapshots / f}")
        if len(ist.files) > 3:
            console.print(f"  … and {len(ist.files) - 3} more")

    console.print(Rule("5. train on Ray"))
    dashboard = init_ray()
    console.print(f"Ray dashboard: {dashboard or '(not running)'}")
    result = run_training(TrainConfig(snapshot_dir=snapshots, registry=str(registry)))
    print_train_result(result)

    console.print(Rule("6. serve"))
    start_serving(ServeArgs(registry=str(registry.resolve())), "127.0.0.1", opts.port)
    base = f"http://127.0.0.1:{opts.port}"
    _wait_http(f"{base}/healthz")
    user = str(ml.ratings.user_id.iloc[0])
    url = f"{base}/recommend/{user}"
    answer = _wait_http(url).text
    console.print(f"$ curl {url}\n{answer}")
    js = httpx.get(url + "?format=json", timeout=10).json()
    console.print(
        f"$ curl '{url}?format=json'  → model {js['model']} {js['model_version']}, "
        f"{len(js['items'])} items, {js['latency_ms']} ms"
    )
    unknown = httpx.get(f"{base}/recommend/no-such-user-42", timeout=10).text
    console.print(f"unknown user → popular movies: {unknown}")

    items = answer.split(",")
    ok = len(items) == 20 and len(set(items)) == 20
    if opts.once:
        serve.shutdown()
        import ray

        ray.shutdown()
        console.print(Rule("done"))
        console.print(
            "[green]demo OK[/green]" if ok else "[red]demo answer was not 20 distinct ids[/red]"
        )
        return 0 if ok else 1
    console.print(f"serving at {base}/recommend/<user_id>; Ctrl-C stops")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    serve.shutdown()
    return 0
