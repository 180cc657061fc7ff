"""Item-KNN at MovieLens-25M scale: our ItemKNN against ``implicit``'s CosineRecommender.

Protocol (one run, same data, same K, same thread count):

1. generate synthetic interactions (:mod:`ray_app.data.synth`; 25M ratings, 162k users, 59k
   items by default, smaller sizes scale users linearly and items with the square root), kept
   as a binary users x items CSR matrix cached under ``--cache``;
2. in a fresh subprocess per library (so peak RSS belongs to that library alone):
   load the matrix, fit cosine item-item similarities with ``K`` neighbours, then recommend
   the top-10 unseen items for 10,000 random users with at least one interaction; ours runs
   twice: with its default column pruning (each target keeps its K best sources) and with
   ``pruning=row`` (each history item votes for its K nearest), which is what implicit does;
3. report fit seconds, recommend seconds, peak RSS (``ru_maxrss``) and the RSS right after
   loading the matrix (what the data alone costs).

``implicit`` is not a project dependency; install it into the venv to compare
(``pip install implicit``); without it only our numbers are printed.

    python benchmarks/knn_scale.py                       # 25M
    python benchmarks/knn_scale.py --interactions 5000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

FULL = (25_000_000, 162_000, 59_000)


def log(message: str) -> None:
    """Progress to stderr so stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    ``VmHWM`` from ``/proc/self/status`` where available: unlike ``ru_maxrss`` it is not
    inherited from the parent across fork + exec, so it is this library's alone.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sizes(n: int, users: int | None, items: int | None) -> tuple[int, int]:
    """MovieLens-25M proportions: users grow linearly with n, items with sqrt(n)."""
    frac = n / FULL[0]
    return (
        users if users is not None else max(100, round(FULL[1] * frac)),
        items if items is not None else max(100, round(FULL[2] * np.sqrt(frac))),
    )


def dataset(n: int, n_users: int, n_items: int, seed: int, cache: Path) -> Path:
    """Generate (once) and cache the binary CSR matrix; returns its .npz path."""
    path = cache / f"synth-{n}-{n_users}-{n_items}-{seed}.npz"
    if path.exists():
        return path
    from ray_app.data.synth_sampler import iter_chunks

    start = time.perf_counter()
    _, chunks = iter_chunks(n, n_users, n_items, seed)
    users, items = [], []
    for c in chunks:
        users.append(c.user)
        items.append(c.item)
    u, i = np.concatenate(users), np.concatenate(items)
    gen_s = time.perf_counter() - start
    m = sp.csr_matrix(
        (np.ones(len(u), dtype=np.float32), (u, i)), shape=(n_users, n_items), dtype=np.float32
    )
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, indptr=m.indptr, indices=m.indices, shape=np.array(m.shape))
    tmp.replace(path)
    log(f"generated {m.nnz:,} interactions ({n_users:,} x {n_items:,}) in {gen_s:.1f} s")
    return path


def load_matrix(path: Path) -> sp.csr_matrix:
    with np.load(path, allow_pickle=False) as z:
        indptr, indices, shape = z["indptr"], z["indices"], tuple(z["shape"])
    return sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=shape)


def pick_users(m: sp.csr_matrix, n: int, seed: int) -> np.ndarray:
    active = np.flatnonzero(np.diff(m.indptr) > 0)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(active, size=min(n, len(active)), replace=False))


def run_ours(
    m: sp.csr_matrix, users: np.ndarray, k: int, threads: int, pruning: str = "column"
) -> dict[str, Any]:
    import pandas as pd

    from ray_app.models.base import Interactions
    from ray_app.models.itemknn import ItemKNN, ItemKNNConfig

    inter = Interactions(
        pd.Index(np.arange(m.shape[0]).astype(str), name="user_id"),
        pd.Index(np.arange(m.shape[1]).astype(str), name="item_id"),
        m,
    )
    # Cosine, not the tf-idf default: the comparison is against implicit's CosineRecommender.
    cfg = ItemKNNConfig(k=k, similarity="cosine", num_threads=threads, pruning=pruning)  # type: ignore[arg-type]
    model = ItemKNN(cfg)
    start = time.perf_counter()
    model.fit(inter)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    top, _ = model.rank_items(users, 10)
    rec_s = time.perf_counter() - start
    return {"fit_s": fit_s, "recommend_s": rec_s, "top": top}


def run_implicit(m: sp.csr_matrix, users: np.ndarray, k: int, threads: int) -> dict[str, Any]:
    from implicit.nearest_neighbours import CosineRecommender

    model = CosineRecommender(K=k, num_threads=threads)
    start = time.perf_counter()
    model.fit(m, show_progress=False)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    ids, _ = model.recommend(users, m[users], N=10, filter_already_liked_items=True)
    rec_s = time.perf_counter() - start
    return {"fit_s": fit_s, "recommend_s": rec_s, "top": ids}


def child(args: argparse.Namespace) -> None:
    """One library in this process; prints one JSON line."""
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    start = time.perf_counter()
    m = load_matrix(args.data)
    load_s = time.perf_counter() - start
    data_rss = rss_mb()
    users = pick_users(m, args.users_to_recommend, args.seed)
    if args.child == "implicit":
        out = run_implicit(m, users, args.k, args.threads)
    else:
        pruning = "row" if args.child == "ours-row" else "column"
        out = run_ours(m, users, args.k, args.threads, pruning)
    top = np.asarray(out.pop("top"))
    np.save(args.data.with_suffix(f".{args.child}.top.npy"), top)
    print(
        json.dumps(
            {
                "library": args.child,
                **out,
                "load_s": load_s,
                "data_rss_mb": data_rss,
                "peak_rss_mb": rss_mb(),
                "users": len(users),
            }
        )
    )


def overlap(data: Path) -> float | None:
    """Mean share of ours-row's top-10 that implicit's top-10 also has (same semantics)."""
    a, b = data.with_suffix(".ours-row.top.npy"), data.with_suffix(".implicit.top.npy")
    if not (a.exists() and b.exists()):
        return None
    x, y = np.load(a), np.load(b)
    return float(np.mean([len(set(r) & set(s)) / 10 for r, s in zip(x, y, strict=True)]))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: prints a markdown table (and JSON lines with --json)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--interactions", type=int, default=FULL[0])
    p.add_argument("--users", type=int, default=None, help="default: scaled from 162k")
    p.add_argument("--items", type=int, default=None, help="default: scaled from 59k")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=100, help="neighbours per item (both libraries)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--users-to-recommend", type=int, default=10_000)
    p.add_argument(
        "--libraries",
        nargs="+",
        default=["ours", "ours-row", "implicit"],
        help="ours: ItemKNN (column pruning, the default); ours-row: ItemKNN with "
        "pruning=row, implicit's neighbourhood semantics; implicit: CosineRecommender",
    )
    p.add_argument("--cache", type=Path, default=Path("/tmp/ray-app-bench"))
    p.add_argument("--child", choices=["ours", "ours-row", "implicit"], help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    n_users, n_items = sizes(args.interactions, args.users, args.items)
    data = dataset(args.interactions, n_users, n_items, args.seed, args.cache)
    rows = []
    for lib in args.libraries:
        if lib == "implicit":
            try:
                import implicit  # noqa: F401
            except ImportError:
                log("implicit is not installed (pip install implicit); skipping it")
                continue
        log(f"running {lib} …")
        cmd = [sys.executable, __file__, "--child", lib, "--data", str(data)]
        cmd += ["--k", str(args.k), "--threads", str(args.threads), "--seed", str(args.seed)]
        cmd += ["--users-to-recommend", str(args.users_to_recommend)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if res.returncode != 0:
            log(res.stderr[-3000:])
            return res.returncode
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        log(json.dumps(rows[-1]))
    agree = overlap(data)
    print(
        f"\nsynthetic {args.interactions:,} interactions, {n_users:,} users x {n_items:,} "
        f"items, K={args.k}, {args.threads} threads, top-10 for {args.users_to_recommend:,} users"
    )
    print("\n| library | fit (s) | recommend (s) | peak RSS (MiB) | RSS after loading data (MiB) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['library']} | {r['fit_s']:.1f} | {r['recommend_s']:.2f} "
            f"| {r['peak_rss_mb']:.0f} | {r['data_rss_mb']:.0f} |"
        )
    if agree is not None:
        print(f"\ntop-10 overlap of ours-row with implicit: {agree:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
