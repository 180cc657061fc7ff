"""Model commands: ``recommend-batch``, ``tune`` and ``data synth``.

``ray_app.cli`` calls :func:`register` once with its root app and its ``data`` sub-app. Heavy
imports (torch, Ray) happen inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()


def _fail(msg: str) -> NoReturn:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(2)


def _read_model_config(path: Path | None) -> dict[str, Any] | None:
    """A model config YAML file (a flat mapping of the model's config fields)."""
    if path is None:
        return None
    if not path.is_file():
        _fail(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        _fail(f"{path}: not valid YAML: {exc}")
    if not isinstance(data, dict):
        _fail(f"{path}: expected a mapping of config fields at the top level, e.g. 'k: 100'")
    return data


def recommend_batch_command(
    train: Annotated[
        Path, typer.Option("--train", help="TRAIN.parquet: user_id, item_id [, rating, timestamp].")
    ],
    users: Annotated[
        Path,
        typer.Option(
            "--users", help="USERS.parquet: user_id [, age, gender, occupation for cold start]."
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model", help="popularity | itemknn | userknn | ease | two_tower (see `MODELS`)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="OUT.parquet: user_id, rank, item_id, score.")],
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML mapping of model config fields (default: defaults)."),
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Items per user.")] = 10,
) -> None:
    """Fit MODEL on TRAIN and write the top-K unseen items for every USERS user.

    Users the model cannot score (not in TRAIN, or no usable history) get the most popular
    TRAIN items; those rows have score NaN.
    """
    from ray_app.batch import recommend_batch

    cfg = _read_model_config(config)
    try:
        with console.status(f"fitting {model} and ranking…"):
            r = recommend_batch(train, users, model, cfg, k, out, progress=lambda m: console.log(m))
    except ValueError as exc:
        _fail(str(exc))
    table = Table("", "value", title=f"recommend-batch: {model}, top-{k}")
    for name, value in (
        ("train interactions", f"{r.train_interactions:,}"),
        ("train users x items", f"{r.train_users:,} x {r.train_items:,}"),
        ("users listed", f"{r.users:,}"),
        ("scored by the model", f"{r.model_scored:,}"),
        ("cold (scored from features)", f"{r.cold_scored:,}"),
        ("with popularity fill", f"{r.popularity_filled:,}"),
        ("rows written", f"{r.rows:,}"),
        ("fit", f"{r.fit_s:.2f} s"),
        ("recommend", f"{r.recommend_s:.2f} s"),
    ):
        table.add_row(name, value)
    console.print(table)
    console.print(f"[green]wrote[/green] {r.out_path}")


def synth_command(
    out: Annotated[Path, typer.Option("--out", help="Output directory for the Parquet files.")],
    interactions: Annotated[
        int, typer.Option("--interactions", min=1, help="Number of (user, item) ratings.")
    ] = 1_000_000,
    users: Annotated[int, typer.Option("--users", min=1, help="Number of users.")] = 10_000,
    items: Annotated[int, typer.Option("--items", min=1, help="Number of items.")] = 5_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (output is deterministic).")] = 0,
) -> None:
    """Generate MovieLens-shaped synthetic data (Zipf items, log-normal users) as Parquet.

    MovieLens-25M scale is ``--interactions 25000000 --users 162000 --items 59000``.
    """
    import time

    from ray_app.data.synth import generate

    start = time.perf_counter()
    with Progress(
        TextColumn("generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("synth", total=interactions)
        try:
            data = generate(
                interactions,
                users,
                items,
                seed,
                out_dir=out,
                progress=lambda done, _total: bar.update(task, completed=done),
            )
        except ValueError as exc:
            _fail(str(exc))
    secs = time.perf_counter() - start
    assert data.ratings_path is not None
    size = data.ratings_path.stat().st_size / 2**20
    console.print(
        f"[green]wrote[/green] {data.n_interactions:,} ratings of {users:,} users on "
        f"{items:,} items to {out} ({size:.0f} MiB ratings.parquet, movies.parquet, "
        f"users.parquet) in {secs:.1f} s"
    )


def tune_command(
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
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="Existing Ray cluster (default: local).")
    ] = None,
) -> None:
    """Ray Tune (ASHA) over the YAML search space on a validation split.

    The split is MovieLens per-user random 80/10/10 (train / validation / untouched test);
    trials fit on train and are scored on validation. Prints every trial and the best config,
    which --out saves for `recommend-batch --config` or the train job.
    """
    from ray_app.config import ConfigError
    from ray_app.data.movielens import load
    from ray_app.evaluation.split import per_user_random_split
    from ray_app.models.catalog import model_class
    from ray_app.runtime import init_ray
    from ray_app.training.tune import load_space, search

    try:
        model_class(model)
        space = load_space(config)
    except (ValueError, ConfigError) as exc:
        _fail(str(exc))
    with console.status(f"loading {dataset}…"):
        ml = load(dataset)
    train, valid, _test = per_user_random_split(ml.ratings, (0.8, 0.1, 0.1), seed=split_seed)
    init_ray(ray_address)
    console.print(
        f"tuning {model}: {num_samples or space.num_samples} trials, ASHA max_t="
        f"{space.scheduler.max_t}, {len(train):,} train / {len(valid):,} validation ratings"
    )
    try:
        with console.status("running trials…"):
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
    except (ValueError, RuntimeError) as exc:
        _fail(str(exc))
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


def register(app: typer.Typer, data_app: typer.Typer) -> None:
    """Add ``recommend-batch`` and ``tune`` to ``app`` and ``synth`` to ``data_app``."""
    app.command("recommend-batch")(recommend_batch_command)
    app.command("tune")(tune_command)
    data_app.command("synth")(synth_command)


__all__ = ["recommend_batch_command", "register", "synth_command", "tune_command"]
