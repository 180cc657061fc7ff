"""Shilling on MovieLens-100K: does the detector find the standard attacks, and does leaving the
flagged users out of training undo what the attacks did to EASE and item-KNN?

Protocol:
  1. hold out 20 % of each genuine user's ratings (seed 0) for NDCG@10; the rest is the clean
     training data, every rating a positive interaction (as the train job does);
  2. choose targets by a fixed rule: ``--targets`` items drawn at random (``--seed``) among
     those with 5 to 25 training ratings (unpopular, but rated);
  3. per attack type, attack size and target: generate the attack (``ray_app.shilling.attacks``,
     filler 3 % of the catalogue) against the clean training data, run the detector with its
     shipped settings (``ShillingConfig()``: threshold 3.5, budget 10 %) on clean + attack, and
     fit each model three times: clean, attacked, attacked minus the flagged users;
  4. report detection precision, recall and false-positive rate among genuine users; the
     target's HR@50, median rank and exposure share (its share of all top-20 slots, what the
     service shows) over the genuine users who have not rated it, at each stage, and the share
     of the attack's lift that filtering removed; and genuine users' NDCG@10 at each stage,
     with genuine users the model no longer knows (flagged by mistake) counted as 0, and as the
     service answers them (the most popular items).

Figures are means over targets. Nothing here is tuned: the detector's settings are its
defaults, the targets come from the rule above.

    python benchmarks/shilling_ml100k.py --targets 5 --json-out shilling.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ray_app.data.movielens import load
from ray_app.evaluation import metrics as M
from ray_app.evaluation.offline import rank_holdout
from ray_app.evaluation.split import per_user_holdout
from ray_app.models.base import Interactions, Recommender
from ray_app.models.catalog import build_model
from ray_app.shilling.attacks import ATTACK_KINDS, AttackConfig, generate_attack
from ray_app.shilling.detector import ShillingConfig, score_users
from ray_app.shilling.impact import detection_quality, lift_removed, target_impact

MODELS = ("ease", "itemknn")
SIZES = (0.01, 0.03, 0.05, 0.10)
STAGES = ("clean", "attacked", "filtered")


def log(message: str) -> None:
    """Progress goes to stderr so stdout holds only the tables."""
    print(message, file=sys.stderr, flush=True)


def choose_targets(train: pd.DataFrame, n: int, seed: int) -> list[str]:
    """``n`` random items with 5 to 25 training ratings."""
    counts = train["item_id"].value_counts()
    pool = np.sort(counts[(counts >= 5) & (counts <= 25)].index.to_numpy(dtype=str))
    return [str(t) for t in np.random.default_rng(seed).choice(pool, n, replace=False)]


def fit(name: str, frame: pd.DataFrame, catalogue: list[str]) -> Recommender[Any]:
    """``name`` with its default config on ``frame`` (binary interactions)."""
    inter = Interactions.from_frame(frame, weight_col=None, item_ids=catalogue)
    return build_model(name).fit(inter)


def genuine_ndcg(model: Recommender[Any], test: pd.DataFrame) -> dict[str, float]:
    """Genuine users' NDCG@10: users the model does not know count 0 (``ndcg@10``), or get
    the service's answer for unknown users, the ten most popular items (``ndcg@10_served``)."""
    ranked = rank_holdout(model, model.interactions, test, 10)
    per_user = M.ndcg_at_k(ranked.recommended, ranked.truth, 10)
    out = {"ndcg@10": float(np.nanmean(per_user))}
    unknown = ~ranked.scored
    popular = np.argsort(-ranked.item_popularity, kind="stable")[:10]
    lists = np.broadcast_to(popular, (len(ranked.users), len(popular)))
    fallback = M.ndcg_at_k(lists, ranked.truth, 10)
    out["ndcg@10_served"] = float(np.nanmean(np.where(unknown, fallback, per_user)))
    return out


def stage_figures(
    model: Recommender[Any], users: list[str], target: str, test: pd.DataFrame
) -> dict[str, float]:
    """The target's impact and the genuine users' NDCG@10 for one fitted model."""
    return {**target_impact(model, users, target, exposure_k=20), **genuine_ndcg(model, test)}


def run(targets_n: int, seed: int, kinds: Sequence[str], models: Sequence[str]) -> dict[str, Any]:
    """Every figure of the protocol as a JSON-able dict."""
    ml = load("ml-100k")
    ratings = ml.ratings[["user_id", "item_id", "rating", "timestamp"]]
    train, test = per_user_holdout(ratings, test_fraction=0.2, seed=0)
    catalogue = sorted(ratings["item_id"].unique())
    users = sorted(train["user_id"].unique())
    targets = choose_targets(train, targets_n, seed)
    log(f"targets: {targets}")
    clean_scores = score_users(train, ShillingConfig())
    clean_fpr = float(clean_scores["flagged"].mean())
    clean = {m: fit(m, train, catalogue) for m in models}
    clean_figs = {(m, t): stage_figures(clean[m], users, t, test) for m in models for t in targets}
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        for size in SIZES:
            started = time.monotonic()
            for t in targets:
                cfg = AttackConfig(kind=kind, size=size, filler_size=0.03)  # type: ignore[arg-type]
                # crc32, not hash(): the same attack on every run.
                seed_ = zlib.crc32(f"{kind}/{size}/{t}".encode())
                attack = generate_attack(train, [t], cfg, seed=seed_)
                attacked = pd.concat([train, attack], ignore_index=True)
                scores = score_users(attacked, ShillingConfig())
                det = detection_quality(scores, set(attack["user_id"]))
                flagged = set(scores.loc[scores["flagged"], "user_id"])
                filtered = attacked[~attacked["user_id"].isin(flagged)]
                for m in models:
                    figs = {
                        "clean": clean_figs[(m, t)],
                        "attacked": stage_figures(fit(m, attacked, catalogue), users, t, test),
                        "filtered": stage_figures(fit(m, filtered, catalogue), users, t, test),
                    }
                    rows.append(
                        {"kind": kind, "size": size, "target": t, "model": m, **det}
                        | {
                            f"{stage}.{key}": value
                            for stage, values in figs.items()
                            for key, value in values.items()
                        }
                    )
            log(f"{kind} {size:.0%}: {time.monotonic() - started:.1f}s")
    return {"targets": targets, "clean_fpr": clean_fpr, "rows": rows}


def summarise(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Means over targets per (kind, size, model), with the lift removed and the NDCG change."""
    frame = pd.DataFrame(rows)
    keys = ["kind", "size", "model"]
    out = frame.groupby(keys, sort=False).mean(numeric_only=True).reset_index()
    for name, column in (("exposure_lift_removed", "exposure@20"), ("hr_lift_removed", "hr@50")):
        out[name] = [
            lift_removed(c, a, f)
            for c, a, f in zip(
                out[f"clean.{column}"],
                out[f"attacked.{column}"],
                out[f"filtered.{column}"],
                strict=True,
            )
        ]
    for stage in ("attacked", "filtered"):
        for key in ("ndcg@10", "ndcg@10_served"):
            out[f"{stage}.{key}_change"] = out[f"{stage}.{key}"] / out[f"clean.{key}"] - 1.0
    return out


def markdown(summary: pd.DataFrame, clean_fpr: float) -> str:
    """The two BENCHMARKS.md tables: detection, and impact per model."""
    det = summary.drop_duplicates(["kind", "size"])
    lines = [
        f"Without an attack the detector flags {clean_fpr:.2%} of the genuine users.",
        "",
        "| attack | size | precision | recall | FPR (genuine) |",
        "|---|---|---|---|---|",
    ]
    for r in det.to_dict("records"):
        lines.append(
            f"| {r['kind']} | {r['size']:.0%} | {r['precision']:.3f} | {r['recall']:.3f} | "
            f"{r['fpr']:.4f} |"
        )
    lines += [
        "",
        "| attack | size | model | HR@50 clean → attacked → filtered | median rank | "
        "exposure@20 (%) | lift removed: HR@50, exposure | NDCG@10 change: attacked, filtered "
        "(0 / served) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.to_dict("records"):
        lines.append(
            f"| {r['kind']} | {r['size']:.0%} | {r['model']} | "
            + " → ".join(f"{r[f'{s}.hr@50']:.3f}" for s in STAGES)
            + " | "
            + " → ".join(f"{r[f'{s}.median_rank']:.0f}" for s in STAGES)
            + " | "
            + " → ".join(f"{100 * r[f'{s}.exposure@20']:.3f}" for s in STAGES)
            + f" | {_pct(r['hr_lift_removed'])}, {_pct(r['exposure_lift_removed'])} | "
            f"{r['attacked.ndcg@10_change']:+.2%}, {r['filtered.ndcg@10_change']:+.2%} / "
            f"{r['filtered.ndcg@10_served_change']:+.2%} |"
        )
    return "\n".join(lines)


def _pct(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{x:.0%}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the protocol and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--targets", type=int, default=5, help="target items per attack")
    parser.add_argument("--seed", type=int, default=0, help="seed of the target draw")
    parser.add_argument("--kinds", nargs="+", default=list(ATTACK_KINDS), choices=ATTACK_KINDS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--json-out", type=Path, help="also write every row as JSON")
    parser.add_argument(
        "--tables-from", type=Path, help="print the tables of a --json-out file, run nothing"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.tables_from:
        result = json.loads(args.tables_from.read_text())
    else:
        result = run(args.targets, args.seed, args.kinds, args.models)
    summary = summarise(result["rows"])
    print(markdown(summary, result["clean_fpr"]))
    log(f"total {time.monotonic() - started:.0f}s")
    if args.json_out and not args.tables_from:
        args.json_out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
