"""Two-tower training throughput (samples/s) with 1 and 2 Ray Train workers.

Trains :class:`ray_app.models.two_tower.TwoTower` on synthetic MovieLens-shaped data (with
genres, years and demographics, so both towers run their feature paths) through Ray Train's
``TorchTrainer`` over a Ray Data dataset, once per worker count, on one local Ray instance.
Each worker gets one CPU and one torch thread (Ray's default); the in-process loop
(``num_workers=0``, also one thread) is the no-Ray baseline.

Reported per run:
  * ``epoch samples/s`` - the last epoch's samples / wall time of the slowest worker, summed
    over workers (what the workers sustain once running);
  * ``fit samples/s`` - epochs x interactions / the whole ``fit`` (start-up, Ray Data,
    per-epoch checkpoint + report, final embedding pass included).

    python benchmarks/two_tower_throughput.py --interactions 300000 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any


def log(message: str) -> None:
    """Progress to stderr so stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: prints a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--interactions", type=int, default=300_000)
    p.add_argument("--users", type=int, default=6_000)
    p.add_argument("--items", type=int, default=3_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--embedding-dim", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs for the local Ray instance")
    args = p.parse_args(argv)

    import ray

    from ray_app.data.synth import generate
    from ray_app.models.base import Interactions
    from ray_app.models.two_tower import TwoTower, TwoTowerConfig

    data = generate(args.interactions, args.users, args.items, seed=0)
    assert data.ratings is not None
    inter = Interactions.from_frame(
        data.ratings,
        weight_col=None,
        item_ids=data.movies["item_id"].tolist(),
        item_features=data.movies,
        user_features=data.users,
    )
    log(f"{inter.nnz:,} interactions, {inter.n_users:,} users, {inter.n_items:,} items")
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    rows: list[dict[str, Any]] = []
    for workers in args.workers:
        cfg = TwoTowerConfig(
            embedding_dim=args.embedding_dim,
            hidden=args.hidden,
            epochs=args.epochs,
            batch_size=args.batch_size,
            num_workers=workers,
            shuffle_buffer=min(100_000, inter.nnz),
        )
        start = time.perf_counter()
        model = TwoTower(cfg).fit(inter)
        wall = time.perf_counter() - start
        m = model.train_metrics_
        row = {
            "workers": workers,
            "epoch_samples_per_s": m["samples_per_s"],
            "fit_samples_per_s": args.epochs * inter.nnz / wall,
            "fit_s": wall,
            "final_loss": m["loss"],
        }
        rows.append(row)
        log(json.dumps(row))
    ray.shutdown()
    print(
        f"\n{inter.nnz:,} interactions x {args.epochs} epochs, batch {args.batch_size}, "
        f"dim {args.embedding_dim}, hidden {args.hidden}, Ray with {args.num_cpus} CPUs"
    )
    print("\n| Ray Train workers | epoch samples/s | fit samples/s | fit (s) | final loss |")
    print("|---|---|---|---|---|")
    for r in rows:
        name = "0 (in-process, no Ray)" if r["workers"] == 0 else str(r["workers"])
        print(
            f"| {name} | {r['epoch_samples_per_s']:,.0f} | {r['fit_samples_per_s']:,.0f} "
            f"| {r['fit_s']:.1f} | {r['final_loss']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
