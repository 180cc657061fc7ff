"""``ray-app train`` (fit, evaluate and register on Ray) and ``ray-app tune`` (Ray Tune)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from ray_app.commands.common import (
    ConfigOpt,
    RayAddressOpt,
    RegistryOverrideOpt,
    SnapshotDirOverrideOpt,
    console,
    require_snapshot_dir,
    user_errors,
)
from ray_app.config import load_config

if TYPE_CHECKING:
    from ray_app.training.job import TrainResult

SUMMARY_METRICS = (
    "ndcg@10",
    "recall@10",
    "precision@10",
    "mrr@10",
    "hit@10",
    "coverage",
    "novelty",
    "gini",
)


def print_train_result(result: TrainResult, out: Console) -> None:
    """The train job's summary: data used, then one row of offline metrics per model."""
    out.print(
        f"trained on {result.interactions:,} interactions ({result.users:,} users, "
        f"{result.items:,} items) from {result.snapshot_files} snapshot files in "
        f"{result.seconds:.1f}s"
    )
    if result.shilling:
        s = result.shilling
        out.print(
            f"shilling screen: {s['flagged']:,} of {s['users_scored']:,} scored users flagged, "
            f"{s['interactions_removed']:,} of their interactions left out of training"
        )
    table = Table(title="offline evaluation (per-user holdout, full ranking, seen items excluded)")
    present = {k for m in result.metrics.values() for k in m}
    keys = [k for k in SUMMARY_METRICS if k in present]
    table.add_column("model")
    table.add_column("version")
    for k in keys:
        table.add_column(k, justify="right")
    for mv in result.versions:
        m = result.metrics[mv.name]
        table.add_row(mv.name, mv.version, *(f"{m.get(k, float('nan')):.4f}" for k in keys))
    out.print(table)


def train_cmd(
    snapshot_dir: SnapshotDirOverrideOpt = None,
    registry: RegistryOverrideOpt = None,
    config: ConfigOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Fit, evaluate and register the configured models on Ray.

    Relative locations resolve against RAY_APP_HOME where the command runs (in a Ray job: on
    the node the job's driver runs on), not against the job's copy of its working dir.
    """
    from ray_app.runtime import init_ray, located_errors
    from ray_app.training.job import TrainConfig, run_training

    cfg = load_config(TrainConfig, config, snapshot_dir=snapshot_dir, registry=registry)
    with located_errors():
        require_snapshot_dir(cfg.snapshot_dir)
    init_ray(ray_address)
    print_train_result(run_training(cfg), console)


def tune_cmd(
    model: Annotated[str, typer.Option("--model", help="Catalogue name, e.g. itemknn.")],
    config: Annotated[
        Path, typer.Option("--config", help="Search space YAML, e.g. configs/tune/itemknn.yaml.")
    ],
    num_samples: Annotated[
        int | None, typer.Option("--num-samples", min=1, help="Trials (default: from the file).")
    ] = None,
    metric: Annotated[
        str | None, typer.Option("--metric", help="Metric to maximise (default: from the file).")
    ] = None,
    dataset: Annotated[str, typer.Option("--dataset", help="MovieLens dataset name.")] = "ml-100k",
    split_seed: Annotated[int, typer.Option("--split-seed", help="Seed of the split.")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the best config here as YAML.")
    ] = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Ray Tune (ASHA) over the YAML search space on a validation split.

    The split is MovieLens per-user random 80/10/10 (train / validation / untouched test);
    trials fit on train and are scored on validation. Prints every trial and the best config,
    which --out saves for `recommend-batch --config` or the train job.
    """
    from ray_app.data.movielens import load
    from ray_app.evaluation.split import per_user_random_split
    from ray_app.models.catalog import model_class
    from ray_app.runtime import init_ray
    from ray_app.training.tune import load_space, search

    with user_errors(ValueError):
        model_class(model)
        space = load_space(config)
    with console.status(f"loading {dataset}…"):
        ml = load(dataset)
    train, valid, _test = per_user_random_split(ml.ratings, (0.8, 0.1, 0.1), seed=split_seed)
    init_ray(ray_address)
    console.print(
        f"tuning {model}: {num_samples or space.num_samples} trials, ASHA max_t="
        f"{space.scheduler.max_t}, {len(train):,} train / {len(valid):,} validation ratings"
    )
    # search() reports a bad metric name or a space the model rejects as ValueError, and
    # trials that all failed as RuntimeError: both are for the user to fix.
    with user_errors(ValueError, RuntimeError), console.status("running trials…"):
        outcome = search(
            model,
            space,
            train,
            valid,
            num_samples,
            metric,
            item_features=ml.movies,
            user_features=ml.users,
        )
    table = Table(*[str(c) for c in outcome.trials.columns], title=f"{model} trials")
    for row in outcome.trials.itertuples(index=False):
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    best = outcome.best_metrics.get(outcome.metric, float("nan"))
    console.print(f"best validation {outcome.metric} = {best:.4f} with:")
    console.print(yaml.safe_dump(outcome.best_config, sort_keys=True).rstrip())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump(outcome.best_config, sort_keys=True))
        console.print(f"[green]wrote[/green] {out}")


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``tune`` to ``app``."""
    app.command("train")(train_cmd)
    app.command("tune")(tune_cmd)
