"""The demo's pipeline (``make demo``, ``ray-app demo``): every stage of the loop on embedded
defaults, printing figures at each step."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.rule import Rule

from ray_app.broker.embedded import kafka_endpoint
from ray_app.broker.settings import KafkaSettings
from ray_app.commands.common import progress_bar
from ray_app.commands.train import print_train_result
from ray_app.data.movielens import load
from ray_app.ingest.config import IngestConfig
from ray_app.ingest.run import run_ingest
from ray_app.replay.events import ReplayConfig
from ray_app.replay.run import replay_movielens
from ray_app.runtime import init_ray, wait_for_stop_signal
from ray_app.serving.config import ServeArgs
from ray_app.training.job import TrainConfig, run_training


class DemoConfig(BaseModel):
    """What the demo runs and where it writes."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    once: bool = False
    """Check one HTTP answer, shut down and exit instead of serving until Ctrl-C."""
    users: int | None = None
    """Replay only the first N users (None: all)."""
    port: int = 8000
    """HTTP port of the Serve app."""
    workdir: Path = Path("data/demo")
    """Where snapshots and the registry go."""
    bootstrap_servers: str = ""
    """Kafka to use; empty starts the embedded broker (and starts from fresh snapshots)."""
    topic: str = "movielog"
    """Topic the replay writes and ingest reads."""


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


def run_demo(opts: DemoConfig, console: Console) -> int:
    """Run the loop; returns the process exit code."""
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
        with progress_bar("replay") as update:
            stats = replay_movielens(
                settings, ReplayConfig(topic=opts.topic, users=opts.users), progress=update
            )
        console.print(
            f"produced {stats.events:,} line-dialect events ({stats.watch:,} watch, "
            f"{stats.rate:,} rate) for {stats.users:,} users in {stats.seconds:.1f}s "
            f"({stats.events / max(stats.seconds, 1e-9):,.0f} events/s)"
        )

        console.print(Rule("4. ingest → Parquet"))
        icfg = IngestConfig(
            topics=[opts.topic], snapshot_dir=snapshots, until_idle_s=3.0, max_batch_delay_s=2.0
        )
        ist = run_ingest(settings, icfg)
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
    print_train_result(result, console)

    console.print(Rule("6. serve"))
    # Only now: Serve reads its mode variables, which init_ray sets, when ray.serve is imported.
    import ray
    from ray import serve

    from ray_app.serving.run import start_serving

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
        ray.shutdown()
        console.print(Rule("done"))
        console.print(
            "[green]demo OK[/green]" if ok else "[red]demo answer was not 20 distinct ids[/red]"
        )
        return 0 if ok else 1
    console.print(f"serving at {base}/recommend/<user_id>; Ctrl-C stops")
    wait_for_stop_signal()
    serve.shutdown()
    return 0
